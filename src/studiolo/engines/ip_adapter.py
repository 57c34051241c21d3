"""IP-Adapter reference images on a loaded diffusers model (issue 19).

CORE PLACEHOLDER: the IP-Adapter helper replaces this module.
"""

from __future__ import annotations

from typing import Any

from studiolo.engines.base import EngineError, GenerationRequest
from studiolo.engines.diffusers_entry import LoadedPipeline


def apply_reference(entry: LoadedPipeline, pipe: Any, request: GenerationRequest, kwargs: dict[str, Any]) -> None:
    """Set ``pipe`` up for ``request.reference`` (its image embeds into ``kwargs``), or leave it without one."""
    if request.reference is not None:
        raise EngineError("Reference images are not available yet.", code="adapters_unsupported")
