"""Hires fix at submit time (issue 19): whether the job may have one, and what its params keep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from studiolo.domain.generation import rules
from studiolo.domain.generation.schemas import HiresParam
from studiolo.engines.base import Capabilities, HiresSpec, JobKind
from studiolo.errors import InvalidInput

# Upscalers every diffusers model can use for its hires pass, besides installed upscaler models.
BUILTIN_HIRES_UPSCALERS = ("lanczos", "latent")


def hires_plan(
    h: HiresParam,
    kind: JobKind,
    caps: Capabilities,
    model_id: str,
    size: tuple[int, int],
    steps: int,
    max_pixels: int,
    upscalers: Sequence[str],
) -> dict[str, Any]:
    """A hires fix's job params: its settings and the final size, which must fit ``max_pixels``. ``upscalers``: the
    installed ones (GET /api/v1/upscalers)."""
    if kind != "txt2img" or not caps.hires:
        raise InvalidInput(
            f"Hires fix works with txt2img on models that take it; '{model_id}' with {kind} does not.",
            code="hires_unsupported",
            details={"field": "hires", "kind": kind, "model": model_id},
        )
    offered = [*BUILTIN_HIRES_UPSCALERS, *(u for u in upscalers if u not in BUILTIN_HIRES_UPSCALERS)]
    if h.upscaler not in offered:
        raise InvalidInput(
            f"'{h.upscaler}' is not an upscaler hires fix can use; choose one of: {', '.join(offered)}.",
            code="unknown_upscaler",
            details={"field": "hires.upscaler", "upscaler": h.upscaler, "upscalers": offered},
        )
    final_w, final_h = HiresSpec(scale=h.scale).size(*size)
    rules.refuse(rules.pixels_rules(final_w, final_h, max_pixels, ("hires",)))
    return {
        "scale": h.scale,
        "upscaler": h.upscaler,
        "strength": h.strength,
        "steps": h.steps or steps,
        "width": final_w,
        "height": final_h,
    }
