"""Hires fix on the diffusers engine (issue 19).

CORE PLACEHOLDER: the hires helper replaces this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from studiolo.engines.base import CancelCheck, EngineError, GenerationRequest, StepCallback
from studiolo.engines.diffusers_entry import LoadedPipeline

if TYPE_CHECKING:
    from studiolo.engines.diffusers_engine import DiffusersEngine


def run_hires(
    engine: DiffusersEngine,
    entry: LoadedPipeline,
    request: GenerationRequest,
    on_step: StepCallback,
    should_cancel: CancelCheck,
) -> tuple[list[tuple[int, Any]], str]:
    """Sample ``request`` small, enlarge, and sample again as img2img: (seed, HxWx3 float array) pairs, sampler."""
    raise EngineError("Hires fix is not available yet.", code="adapters_unsupported")
