"""ControlNet units on a loaded diffusers model (issue 19).

CORE PLACEHOLDER: the ControlNet helper replaces this module.
"""

from __future__ import annotations

from typing import Any

from studiolo.engines.base import EngineError, GenerationRequest
from studiolo.engines.diffusers_entry import LoadedPipeline


def control_pipeline(entry: LoadedPipeline, request: GenerationRequest, pipe: Any, kwargs: dict[str, Any]) -> Any:
    """The pipeline to run ``request`` with: ``pipe`` itself when no ControlNet unit acts, else the task's ControlNet
    pipeline sharing ``entry``'s modules, with the units' maps and settings added to ``kwargs``."""
    if request.controls:
        raise EngineError("ControlNet is not available yet.", code="adapters_unsupported")
    return pipe
