"""Model upscalers run by the diffusers engine: diffusers' ``StableDiffusionUpscalePipeline`` (the SD x4 upscaler)
and ``StableDiffusionLatentUpscalePipeline`` (the SD x2 latent upscaler).

A part of diffusers_engine.py kept apart for its size: that engine loads an upscaler folder like any other model
(``studiolo models import``), reports ``upscale`` as its only capability, and builds the call here for an upscale
request. The call's arguments differ from the drawing pipelines': an ``image`` to enlarge, no output size (the
factor is the model's), and the older per-step ``callback``. Tests: tests/unit/test_upscale_engine.py.
"""

from __future__ import annotations

from typing import Any

from studiolo.engines.base import CancelCheck, Capabilities, GenerationCanceled, GenerationRequest, StepCallback
from studiolo.engines.model_files import UPSCALE_PIPELINES

__all__ = ["UPSCALE_PIPELINES", "is_upscaler", "upscale_kwargs", "upscaler_capabilities"]

# How much noise the x4 upscaler adds to the low-resolution image it is conditioned on (its own default): more
# invents more detail and keeps less of the source.
X4_NOISE_LEVEL = 20


def is_upscaler(pipe: Any) -> bool:
    """True for a loaded upscale pipeline (it has no txt2img/img2img/inpaint variants)."""
    return type(pipe).__name__ in UPSCALE_PIPELINES


def upscaler_capabilities() -> Capabilities:
    return Capabilities(txt2img=False, img2img=False, inpaint=False, upscale=True)


def upscale_kwargs(
    pipe: Any, request: GenerationRequest, common: dict[str, Any], on_step: StepCallback, should_cancel: CancelCheck
) -> dict[str, Any]:
    """The pipeline call for an upscale request, from the ``common`` arguments every call shares (prompts, steps,
    guidance, per-image generators, numpy output)."""
    assert request.init_image is not None  # the worker always gives the source image
    n = request.n
    total = request.steps

    def callback(step: int, timestep: Any, latents: Any) -> None:
        on_step(step + 1, total)
        if should_cancel():
            raise GenerationCanceled()

    kwargs = {
        key: value
        for key, value in common.items()
        if key not in ("callback_on_step_end", "callback_on_step_end_tensor_inputs", "num_images_per_prompt")
    }
    kwargs.update(image=[request.init_image.convert("RGB")] * n, callback=callback, callback_steps=1)
    if type(pipe).__name__ == "StableDiffusionUpscalePipeline":
        kwargs.update(noise_level=X4_NOISE_LEVEL, num_images_per_prompt=1)
    return kwargs
