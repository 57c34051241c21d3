"""The AUTOMATIC1111 face's adapter lists (issue 19): GET /sdapi/v1/loras and /sdapi/v1/embeddings in A1111's shapes,
from the adapter catalog. The LoRAs listed are what ``<lora:name:0.8>`` in a txt2img prompt names; the embeddings
are prompt words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studiolo.domain.adapters.catalog import AdapterCatalog, fits, model_context_dim
from studiolo.engines.base import ModelRef
from studiolo.engines.model_files import ModelFileError, read_safetensors_header


def _training_metadata(path: str) -> dict[str, Any]:
    """The file's ``__metadata__`` (kohya's ss_* training notes), as A1111 answers it; {} when there is none."""
    file = Path(path)
    if file.suffix.lower() != ".safetensors" or not file.is_file():
        return {}
    try:
        meta = read_safetensors_header(file).get("__metadata__")
    except ModelFileError:
        return {}  # a file damaged since import: the job that uses it says so (model_file_corrupt)
    return dict(meta) if isinstance(meta, dict) else {}


def loras(catalog: AdapterCatalog) -> list[dict[str, Any]]:
    """GET /loras: ``[{name, alias, path, metadata}]``; the name is what ``<lora:NAME:w>`` takes."""
    return [
        {"name": a.id, "alias": a.id, "path": a.path, "metadata": _training_metadata(a.path)}
        for a in catalog.adapters("lora")
    ]


def embeddings(catalog: AdapterCatalog, model: ModelRef | None) -> dict[str, dict[str, Any]]:
    """GET /embeddings: those fitting the caller's checkpoint are ``loaded``, the others ``skipped`` (as A1111 sorts
    them); with no checkpoint to compare, all are loaded."""
    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    model_dim = model_context_dim(model) if model is not None else None
    for a in catalog.adapters("embedding"):
        entry = {
            "step": None,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "shape": a.context_dim,
            "vectors": a.meta.get("vectors"),
        }
        (loaded if model is None or fits(a, model, model_dim) else skipped)[a.id] = entry
    return {"loaded": loaded, "skipped": skipped}
