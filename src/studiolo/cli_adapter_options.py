"""`studiolo generate`'s adapter options (issue 19): LoRAs, ControlNet units, a reference image and hires fix, turned
into the GenerationParams fields the API takes. Pictures travel as data: URLs, so the same values serve a local run
and ``--server``."""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Annotated, Any

import typer

from studiolo.engines.base import CONTROL_TYPES

LoraOption = Annotated[
    list[str] | None,
    typer.Option(
        "--lora", help="A LoRA as NAME or NAME:WEIGHT (repeat for several); <lora:NAME:W> in the prompt works too."
    ),
]
ControlOption = Annotated[
    list[str] | None,
    typer.Option(
        "--control",
        help=f"A ControlNet unit as TYPE:PICTURE[:STRENGTH] (repeat, up to 3); TYPE: {', '.join(CONTROL_TYPES)}.",
    ),
]
ControlIsMapOption = Annotated[
    bool, typer.Option("--control-is-map", help="The --control pictures already are the maps (no preprocessing).")
]
ReferenceOption = Annotated[Path | None, typer.Option("--reference", help="IP-Adapter reference picture.")]
ReferenceStrengthOption = Annotated[float, typer.Option("--reference-strength", help="0..1.")]
HiresOption = Annotated[
    float | None, typer.Option("--hires", help="Hires fix: enlarge this many times (1-4) and refine.")
]
HiresUpscalerOption = Annotated[
    str, typer.Option("--hires-upscaler", help="lanczos, latent or an installed upscaler (`studiolo upscale --list`).")
]
HiresStrengthOption = Annotated[float, typer.Option("--hires-strength", help="Denoising strength of the second pass.")]
HiresStepsOption = Annotated[int | None, typer.Option("--hires-steps", help="Steps of the second pass.")]


def _data_url(path: Path, option: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint=option) from exc
    media = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def _number(text: str, what: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{what} must be a number (got {text!r})", param_hint=option) from None


def adapter_values(
    *,
    loras: list[str] | None,
    controls: list[str] | None,
    control_is_map: bool,
    reference: Path | None,
    reference_strength: float,
    hires: float | None,
    hires_upscaler: str,
    hires_strength: float,
    hires_steps: int | None,
) -> dict[str, Any]:
    """The GenerationParams fields of these options (only those given)."""
    values: dict[str, Any] = {}
    if loras:
        values["loras"] = []
        for item in loras:
            name, _, weight = item.rpartition(":") if ":" in item else (item, "", "")
            values["loras"].append(
                {"name": name, "weight": _number(weight, "a LoRA weight", "--lora") if weight else 1.0}
            )
    if controls:
        values["controls"] = []
        for item in controls:
            parts = item.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise typer.BadParameter(f"expected TYPE:PICTURE[:STRENGTH], got {item!r}", param_hint="--control")
            unit: dict[str, Any] = {"type": parts[0], "image": _data_url(Path(parts[1]), "--control")}
            if len(parts) == 3:
                unit["strength"] = _number(parts[2], "a ControlNet strength", "--control")
            if control_is_map:
                unit["preprocess"] = False
            values["controls"].append(unit)
    if reference is not None:
        values["reference_image"] = _data_url(reference, "--reference")
        values["reference_strength"] = reference_strength
    if hires is not None:
        values["hires"] = {"scale": hires, "upscaler": hires_upscaler, "strength": hires_strength}
        if hires_steps is not None:
            values["hires"]["steps"] = hires_steps
    return values
