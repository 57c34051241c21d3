"""Hires fix on the diffusers engine (issue 19), as A1111's "Hires. fix" does it.

The job is sampled at the request's size (txt2img, with its LoRAs, ControlNet units and reference image: the
engine's own path), each picture is enlarged to ``HiresSpec.size`` and then sampled again as img2img at the
hires strength, each image from its own first-pass picture and with its own seed, so image k of a batch still
equals the same seed alone.

Enlarging: "lanczos" resizes the 8-bit pictures (engines/upscale.py, Lanczos + sharpen); an installed upscaler
model runs through ``HiresSpec.upscale``; "latent" never decodes the first pass: its latents are enlarged
bilinearly, as A1111's "Latent" upscaler does, and handed to img2img as they are (diffusers' img2img pipelines
take 4-channel latents in place of a picture).

Steps: the second pass samples exactly ``hires.steps`` steps (0: the request's) whatever the strength, as A1111
does when hires steps are given: its schedule is stretched so that ``strength`` of it is that many steps.
Progress runs on across both passes: step 1..total once, total = first-pass steps + second-pass steps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from PIL import Image

from studiolo.engines.base import (
    CancelCheck,
    EngineError,
    GenerationCanceled,
    GenerationRequest,
    HiresSpec,
    Preview,
    StepCallback,
)
from studiolo.engines.diffusers_entry import LoadedPipeline
from studiolo.engines.diffusers_sampling import make_scheduler
from studiolo.engines.upscale import upscale_image

if TYPE_CHECKING:
    from studiolo.engines.diffusers_engine import DiffusersEngine

LATENT_UPSCALER = "latent"
LANCZOS_UPSCALER = "lanczos"
# A1111's "Latent" upscaler: torch interpolate, bilinear, no antialias.
LATENT_MODE = "bilinear"


def run_hires(
    engine: DiffusersEngine,
    entry: LoadedPipeline,
    request: GenerationRequest,
    on_step: StepCallback,
    should_cancel: CancelCheck,
) -> tuple[list[tuple[int, Any]], str]:
    """Sample ``request`` small, enlarge, and sample again as img2img: (seed, HxWx3 float array) pairs, sampler."""
    hires = request.hires
    assert hires is not None  # the engine calls this only for a hires job
    width, height = _check(entry, request, hires)
    steps = _second_pass_schedule(entry, hires.steps or request.steps, hires.strength)
    progress = _Progress(on_step, _sampled_steps(entry, request, steps, hires.strength))

    latent = hires.upscaler == LATENT_UPSCALER
    first, _sampler = engine._run(
        entry,
        replace(request, hires=None),
        progress.first,
        should_cancel,
        output_type="latent" if latent else "np",
    )
    if should_cancel():
        raise GenerationCanceled()
    if latent:
        scale = int(getattr(entry.pipes["img2img"], "vae_scale_factor", 8) or 8)
        starts: list[Any] = [_enlarge_latents(x, width // scale, height // scale) for _seed, x in first]
        init_image = None
    else:
        starts = _enlarge_pictures([_picture(array) for _seed, array in first], hires, width, height)
        init_image = starts[0]
    if should_cancel():
        raise GenerationCanceled()

    second = replace(
        request,
        kind="img2img",
        width=width,
        height=height,
        steps=steps,
        strength=hires.strength,
        init_image=init_image,
        mask_image=None,
        # The variation seed moved the first pass's noise; the second pass starts from its pictures.
        variation_seeds=None,
        variation_strength=0.0,
        hires=None,
    )
    return engine._run(entry, second, progress.second, should_cancel, init_images=starts)


def _check(entry: LoadedPipeline, request: GenerationRequest, hires: HiresSpec) -> tuple[int, int]:
    """The final size, after refusing what the two passes cannot do (submit checks these too: hires_plan)."""
    if request.kind != "txt2img" or "img2img" not in entry.pipes:
        raise EngineError(
            f"Hires fix works with txt2img on models that also do img2img, not {request.kind} on '{request.model.id}'.",
            code="hires_unsupported",
        )
    if not 0.0 < hires.strength <= 1.0:
        raise EngineError("The hires strength must be in (0, 1].", code="invalid_request")
    if hires.steps < 0:
        raise EngineError("Hires steps must be 0 (the job's steps) or more.", code="invalid_request")
    if hires.upscaler not in (LATENT_UPSCALER, LANCZOS_UPSCALER) and hires.upscale is None:
        raise EngineError(f"The hires upscaler '{hires.upscaler}' is not available.", code="unknown_upscaler")
    width, height = hires.size(request.width, request.height)
    if width < request.width or height < request.height or width <= 0 or height <= 0:
        raise EngineError(f"A hires scale of {hires.scale} does not enlarge the image.", code="invalid_request")
    if width * height > entry.capabilities.max_pixels:
        raise EngineError(
            f"The hires size {width}x{height} is larger than this model allows "
            f"({entry.capabilities.max_pixels} pixels).",
            code="invalid_request",
        )
    return width, height


def _picture(array: Any) -> Image.Image:
    import numpy as np

    # The same rounding as the engine's own 8-bit output (DiffusersEngine.generate).
    return Image.fromarray((array * 255).round().astype(np.uint8)).convert("RGB")


def _enlarge_pictures(pictures: list[Image.Image], hires: HiresSpec, width: int, height: int) -> list[Image.Image]:
    if hires.upscale is None:
        return [upscale_image(picture, width, height) for picture in pictures]
    enlarged = hires.upscale(pictures, width, height)
    if len(enlarged) != len(pictures):
        raise EngineError(
            f"The hires upscaler '{hires.upscaler}' returned {len(enlarged)} pictures for {len(pictures)}.",
            code="generation_failed",
        )
    # A model upscaler has a fixed factor (x4): bring its output to the exact final size.
    return [p.convert("RGB").resize((width, height), Image.Resampling.LANCZOS) for p in enlarged]


def _enlarge_latents(latents: Any, width: int, height: int) -> Any:
    import torch

    with torch.inference_mode():
        return torch.nn.functional.interpolate(latents[None], size=(height, width), mode=LATENT_MODE)[0]


def _second_pass_schedule(entry: LoadedPipeline, steps: int, strength: float) -> int:
    """The schedule length whose last ``strength`` is ``steps`` steps: diffusers' img2img runs
    ``int(schedule * strength)`` of them, so the smallest schedule that reaches ``steps``."""
    limit = int(getattr(entry.base.scheduler.config, "num_train_timesteps", 1000) or 1000)
    schedule = max(steps, int(steps / strength) - 1)
    while int(schedule * strength) < steps and schedule < limit:
        schedule += 1
    return min(schedule, limit)


def _sampled_steps(entry: LoadedPipeline, request: GenerationRequest, schedule: int, strength: float) -> int:
    """How many step callbacks the img2img pass makes: its timesteps as diffusers' ``get_timesteps`` cuts them."""
    scheduler, _name = make_scheduler(entry.base.scheduler, request.sampler, request.scheduler)
    scheduler.set_timesteps(schedule, device="cpu")
    start = max(schedule - min(int(schedule * strength), schedule), 0)
    return len(scheduler.timesteps[start * scheduler.order :])


class _Progress:
    """One count of steps over both passes: the first pass's steps, then the second's after them."""

    def __init__(self, on_step: StepCallback, second_total: int):
        self.on_step = on_step
        self.second_total = second_total
        self.first_total = 0

    def first(self, step: int, total: int, /, preview: Preview | None = None, image: int = 0) -> None:
        self.first_total = total
        self.on_step(step, total + self.second_total, preview=preview, image=image)

    def second(self, step: int, total: int, /, preview: Preview | None = None, image: int = 0) -> None:
        self.on_step(self.first_total + step, self.first_total + total, preview=preview, image=image)
