"""LoRA / LyCORIS and textual-inversion embeddings on a loaded diffusers model (issue 19).

CORE PLACEHOLDER: the LoRA helper replaces this module.
"""

from __future__ import annotations

from studiolo.engines.base import EngineError, GenerationRequest
from studiolo.engines.diffusers_entry import LoadedPipeline


def apply_loras(entry: LoadedPipeline, request: GenerationRequest) -> None:
    """Make ``request.loras`` (and only those) active on ``entry``'s modules at their weights."""
    if request.loras:
        raise EngineError("LoRA is not available yet.", code="adapters_unsupported")


def apply_embeddings(entry: LoadedPipeline, request: GenerationRequest) -> None:
    """Load ``request.embeddings`` into ``entry``'s tokenizers and text encoders (once per model)."""
    if request.embeddings:
        raise EngineError("Embeddings are not available yet.", code="adapters_unsupported")
