"""Sampling options of the diffusers engine: samplers and sigma schedules (names -> scheduler classes and config
flags), the variation seed's starting latents, and the capabilities they add up to.

A sampler is a diffusers scheduler class (with overrides); a schedule (A1111's "Schedule type", engines/schedules.py)
is a flag on top of it (``use_karras_sigmas``...), offered only where the class has the flag. diffusers is imported
inside the functions (this module is imported with the engine at server start-up).
"""

from __future__ import annotations

import inspect
from typing import Any

from studiolo.engines.base import Capabilities, EngineError, GenerationRequest
from studiolo.engines.noise import seeded_noise
from studiolo.engines.schedules import SCHEDULES, is_automatic

_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
# Sampler name -> (diffusers scheduler class, config overrides applied on top of the model's own config).
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", _DPMPP_2M),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {**_DPMPP_2M, "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
DEFAULT_SAMPLERS = (None, "default")
# Which sampler name "default" turned out to be, reported back with the images.
_SAMPLER_BY_SCHEDULER = {cls_name: name for name, (cls_name, _o) in reversed(SAMPLERS.items())}  # first wins
# Schedule -> the config flag that selects it; "uniform" turns every flag off, "automatic" leaves the config alone.
SCHEDULE_FLAGS: dict[str, str] = {
    "karras": "use_karras_sigmas",
    "exponential": "use_exponential_sigmas",
    "beta": "use_beta_sigmas",
}
# What GET /models offers for a diffusers model (the sampler decides which of them it takes: scheduler_overrides).
DIFFUSERS_SCHEDULES: tuple[str, ...] = tuple(s for s in SCHEDULES if s != "automatic")


def scheduler_overrides(scheduler_class: Any, schedule: str | None) -> dict[str, Any]:
    """The config flags that give ``scheduler_class`` the sigma ``schedule``; EngineError(invalid_scheduler) when the
    class has no such schedule (DDIM, PNDM and Euler Ancestral keep their own)."""
    if is_automatic(schedule):
        return {}
    if schedule not in SCHEDULES:
        raise EngineError(
            f"Unknown scheduler {schedule!r}; choose one of: {', '.join(SCHEDULES)}.", code="invalid_scheduler"
        )
    accepted = inspect.signature(scheduler_class.__init__).parameters
    flags = {flag: flag == SCHEDULE_FLAGS.get(schedule) for flag in SCHEDULE_FLAGS.values() if flag in accepted}
    if schedule != "uniform" and SCHEDULE_FLAGS[str(schedule)] not in flags:
        raise EngineError(
            f"The {scheduler_class.__name__} sampler has no {schedule} schedule; choose another sampler (euler, "
            "heun, dpmpp_2m, lms, unipc) or the automatic schedule.",
            code="invalid_scheduler",
        )
    return flags


def make_scheduler(current: Any, sampler: str | None, schedule: str | None = None) -> tuple[Any, str]:
    """A fresh scheduler for one run (schedulers keep per-run state) and the sampler name used."""
    import diffusers

    if sampler is None or sampler not in SAMPLERS:  # "default" (unknown names were refused earlier)
        cls = type(current)
        name = _SAMPLER_BY_SCHEDULER.get(cls.__name__, cls.__name__)
        return cls.from_config(current.config, **scheduler_overrides(cls, schedule)), name
    cls_name, overrides = SAMPLERS[sampler]
    try:
        cls = getattr(diffusers, cls_name)
        return cls.from_config(current.config, **{**overrides, **scheduler_overrides(cls, schedule)}), sampler
    except ImportError as exc:  # e.g. LMS needs scipy
        raise EngineError(f"Sampler {sampler!r} is not available here: {exc}", code="invalid_sampler") from exc


def diffusers_capabilities(txt2img: bool, img2img: bool, inpaint: bool) -> Capabilities:
    return Capabilities(
        txt2img=txt2img,
        img2img=img2img,
        inpaint=inpaint,
        samplers=tuple(SAMPLERS),
        schedulers=DIFFUSERS_SCHEDULES,
        # Only txt2img: the img2img and inpainting pipelines draw their noise inside and take no starting latents
        # that keep the init image (passing them would ignore it), so a variation seed is refused there at submit.
        variation_kinds=("txt2img",) if txt2img else (),
        # Issue 19: engines/lora.py, controlnet.py, ip_adapter.py and hires.py apply these on any SD-family model.
        adapters=("lora", "embedding", "controlnet", "ip_adapter"),
        hires=txt2img,
    )


def variation_latents(pipe: Any, request: GenerationRequest, gen_device: str) -> Any:
    """The starting latents of a txt2img run with a variation seed: per image, its seed's noise slerped towards its
    variation seed's (engines/noise.py), drawn as the pipeline would draw it (same shape, generator device, dtype),
    so strength 0 equals no variation seed and strength 1 equals the variation seed as the seed (drawn in the
    pipeline's dtype: randn in float16 is not randn in float32 rounded)."""
    import torch

    assert request.variation_seeds is not None
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    shape = (1, pipe.unet.config.in_channels, request.height // scale, request.width // scale)
    dtype = pipe.unet.dtype
    strength = request.variation_strength
    noises = [
        seeded_noise(shape, seed, variation_seed=vs, variation_strength=strength, device=gen_device, dtype=dtype)
        for seed, vs in zip(request.seeds, request.variation_seeds, strict=True)
    ]
    return torch.cat(noises).to(device=pipe.device, dtype=dtype)


def keep_unmasked(arrays: list[Any], init: Any, mask: Any) -> list[Any]:
    """Inpainting results with the kept region (mask black) the init image's own pixels, as AUTOMATIC1111 overlays
    them: the trip through the VAE otherwise shifts colours and blurs detail there that nobody asked to change."""
    import numpy as np

    keep = 1.0 - np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    original = np.asarray(init, dtype=np.float32) / 255.0
    return [(array * (1.0 - keep) + original * keep).astype(array.dtype) for array in arrays]
