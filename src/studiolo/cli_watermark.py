"""``studiolo watermark check FILE``: read the invisible watermark of an image file (a PNG, JPEG, WebP...).

Says whether a payload was found (vote confidence at least ``invisible.FOUND_AT``), what it is, and whether it is
this install's (``payload_for`` of STUDIOLO_WATERMARK_PAYLOAD, else of the install's secret key). Exit codes: 0
found, 1 no watermark found, 2 not an image. Needs no database: it reads the settings and the key file only, and
never creates the key (an install without one has marked nothing yet).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from studiolo.cli_options import SuggestingGroup
from studiolo.settings import Settings


def _install_payload(settings: Settings) -> bytes | None:
    """This install's payload, or None when it has no configured payload and no secret key yet."""
    from studiolo.domain.accounts.tokens import load_secret_key
    from studiolo.domain.safety import invisible

    if not settings.watermark_payload and not settings.secret_key and not (settings.data_dir / "secret.key").exists():
        return None
    return invisible.payload_for(settings.watermark_payload, load_secret_key(settings).encode())


def _printable(payload: bytes) -> str | None:
    """A configured text payload as text (its zero padding dropped); None for a key-derived one."""
    text = payload.rstrip(b"\0")
    return text.decode() if text and all(32 <= b < 127 for b in text) else None


def check_file(path: Path, settings: Settings) -> dict[str, Any]:
    """What ``watermark check`` reports of ``path``; raises ValueError when it is not a readable image."""
    # Imported here: numpy, scipy, PyWavelets and OpenCV would slow every other command's start.
    from PIL import Image, UnidentifiedImageError

    from studiolo.domain.safety import invisible

    try:
        with Image.open(path) as img:
            img.load()
            image = img.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise ValueError(f"{path} is not an image Pillow can read ({exc.__class__.__name__}).") from exc
    reading = invisible.read(image)
    mine = _install_payload(settings)
    found = reading.found
    return {
        "file": str(path),
        "width": image.width,
        "height": image.height,
        "found": found,
        "payload_hex": reading.payload.hex() if found else None,
        "payload_text": _printable(reading.payload) if found else None,
        "this_install": found and mine is not None and reading.payload == mine,
        "confidence": round(reading.confidence, 4),
        "found_at": invisible.FOUND_AT,
        "too_small": not invisible.fits(image),
    }


def build_watermark_app(settings: Callable[[], Settings], out: Console, console: Console) -> typer.Typer:
    """The ``watermark`` command group; ``settings`` is cli.py's (a configuration problem: one line, exit 2)."""
    watermark_app = typer.Typer(
        help="The invisible watermark Studiolo puts in every image it makes.", no_args_is_help=True, cls=SuggestingGroup
    )

    @watermark_app.command()
    def check(
        file: Annotated[Path, typer.Argument(help="The image file (PNG, JPEG, WebP...).", show_default=False)],
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ) -> None:
        """Read an image's invisible watermark: found or not, its payload, whether this install made it."""
        if not file.is_file():
            console.print(f"[red]error[/red] [bold]not_found[/bold]: no file {escape(str(file))}")
            raise typer.Exit(2)
        try:
            report = check_file(file, settings())
        except ValueError as exc:
            console.print(f"[red]error[/red] [bold]invalid_image[/bold]: {escape(str(exc))}")
            raise typer.Exit(2) from None
        if as_json:
            out.print_json(json.dumps(report))
        elif report["found"]:
            text = f' ("{escape(report["payload_text"])}")' if report["payload_text"] else ""
            owner = "yes" if report["this_install"] else "no (another install, or another payload setting)"
            out.print(f"watermark found (confidence {report['confidence']:.2f})")
            out.print(f"payload      {report['payload_hex']}{text}")
            out.print(f"this install {owner}")
        else:
            why = (
                " (the image is under 256x256: too small to carry one)"
                if report["too_small"]
                else " (never marked, or cropped, or edited past reading)"
            )
            score = f"confidence {report['confidence']:.2f} (found from {report['found_at']:.2f})"
            out.print(f"no watermark found{why}; {score}")
        if not report["found"]:
            raise typer.Exit(1)

    return watermark_app
