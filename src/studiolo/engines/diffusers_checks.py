"""Checks of the diffusers engine: a request it can run, and whether an error means "out of memory"."""

from __future__ import annotations

from studiolo.engines.base import EngineError, GenerationRequest
from studiolo.engines.diffusers_sampling import DEFAULT_SAMPLERS, SAMPLERS


def validate_request(request: GenerationRequest) -> None:
    if not request.seeds:
        raise EngineError("A generation needs at least one seed.", code="invalid_request")
    if request.steps < 1:
        raise EngineError("steps must be at least 1.", code="invalid_request")
    if request.width <= 0 or request.height <= 0 or request.width % 8 or request.height % 8:
        raise EngineError(
            f"Width and height must be positive multiples of 8 (got {request.width}x{request.height}).",
            code="invalid_request",
        )
    if request.sampler not in DEFAULT_SAMPLERS and request.sampler not in SAMPLERS:
        raise EngineError(
            f"Unknown sampler {request.sampler!r}; choose one of: default, {', '.join(SAMPLERS)}.",
            code="invalid_sampler",
        )
    if request.kind in ("img2img", "inpaint"):
        if request.init_image is None:
            raise EngineError(f"{request.kind} needs an init image.", code="invalid_request")
        if not 0.0 < request.strength <= 1.0:
            raise EngineError("strength must be in (0, 1].", code="invalid_request")
    if request.kind == "inpaint" and request.mask_image is None:
        raise EngineError("inpaint needs a mask image (white = repaint).", code="invalid_request")
    if request.variation_seeds is not None and request.variation_strength > 0 and request.kind != "txt2img":
        raise EngineError(
            f"A variation seed works with txt2img only on diffusers models, not {request.kind}.",
            code="unsupported_variation",
        )


def is_oom(exc: BaseException) -> bool:
    import torch

    # MPS and older CUDA builds raise a plain RuntimeError("... out of memory ...").
    oom = isinstance(exc, torch.cuda.OutOfMemoryError)
    return oom or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
