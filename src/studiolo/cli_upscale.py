"""``studiolo upscale IMAGE_ID``: enlarge a gallery image through the job queue, as ``POST /images/{id}/upscale``
does (kept apart from cli.py for its size; cli.py registers it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.schemas import UpscaleRequest
from studiolo.errors import StudioloError


def upscale(
    image_id: Annotated[str, typer.Argument(help="The gallery image to enlarge (its id, e.g. from `generate`).")],
    factor: Annotated[int, typer.Option(help="2 or 4: how many times wider and taller.")] = 2,
    upscaler: Annotated[
        str, typer.Option(help='"lanczos" (built in), or an installed upscaler model (GET /api/v1/upscalers).')
    ] = "lanczos",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Also write the PNG to this folder.")] = None,
) -> None:
    """Upscale an image 2x or 4x into a new gallery image linked to it; waits with a progress bar."""
    from studiolo.cli import _fail, _services, _settings, _wait_with_progress, console, out, write_new_file

    settings = _settings().model_copy(update={"inline_workers": 0})
    services = _services(settings)
    job_id: str | None = None
    try:
        try:
            accepted, _ = services.upscale.submit(
                LOCAL_USER_ID, image_id, UpscaleRequest(factor=factor, upscaler=upscaler)
            )
            job_id = accepted.id
            services.start_workers(1)
            view = _wait_with_progress(services, accepted.id, 1)
        except StudioloError as exc:
            raise _fail(exc) from exc
        except KeyboardInterrupt:
            if job_id:
                services.generation.cancel(LOCAL_USER_ID, job_id)
            console.print("canceled")
            raise typer.Exit(130) from None
        if view.status != "succeeded" or not view.outputs:
            err = view.error
            console.print(
                f"[red]job {view.status}[/red] [bold]{err.code if err else ''}[/bold]: {err.message if err else ''}"
            )
            raise typer.Exit(1)
        output = view.outputs[0]
        size = f"{view.params['width']}x{view.params['height']}"
        console.print(f"[green]done[/green] job {view.id}: {image_id} upscaled {factor}x with {upscaler} to {size}")
        out.print(f"image {output.image_id}")
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            key, _ = services.gallery.file(LOCAL_USER_ID, output.image_id, "original")
            path = write_new_file(out_dir, f"{output.image_id}-x{factor}", ".png", services.gallery.read(key))
            out.print(str(path), soft_wrap=True, markup=False, highlight=False)
    finally:
        services.close(timeout=5)
