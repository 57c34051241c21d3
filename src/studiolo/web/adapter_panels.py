"""What the generator's adapter panels and the models page show (issue 19): installed LoRAs, ControlNets,
IP-Adapters and embeddings, which of them fit each model, and what each model can take.

Read on the server from the same catalogs the API uses (AdapterCatalog, ModelCatalog), so the page works without
another round trip and says exactly what a submit would accept: an adapter is offered for a model only when
``domain.adapters.catalog.fits`` says it fits, the rule ``plan`` checks at submit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studiolo.domain.adapters.catalog import FAMILY_NAMES, KIND_NAMES, AdapterInfo, fits, model_context_dim
from studiolo.domain.adapters.hires import BUILTIN_HIRES_UPSCALERS
from studiolo.domain.generation.catalog import ModelInfo
from studiolo.engines.base import CONTROL_TYPES, ModelRef
from studiolo.engines.preprocess import BUILTIN_TYPES, MODEL_TYPES
from studiolo.services import Services


def family_text(family: str | None, context_dim: int | None = None) -> str:
    """A base family as people name it ("SD 1.x"); a custom base by its text-encoder width."""
    if family:
        return FAMILY_NAMES.get(family, family)
    return f"custom base ({context_dim}-wide)" if context_dim else "any base"


def adapter_item(a: AdapterInfo) -> dict[str, Any]:
    """One adapter as the page shows it: the fields GET /api/v1/adapters answers with."""
    control_type = a.meta.get("control_type")
    preprocessor = a.meta.get("preprocessor")
    return {
        "id": a.id,
        "kind": a.kind,
        "kind_label": KIND_NAMES.get(a.kind, a.kind),
        "family": a.family,
        "family_label": family_text(a.family, a.context_dim),
        "format": a.format,
        "size_bytes": a.size_bytes,
        "control_type": control_type if isinstance(control_type, str) else None,
        "preprocessor": preprocessor if isinstance(preprocessor, str) else None,
    }


def _model_ref(m: ModelInfo) -> ModelRef:
    return ModelRef(
        id=m.id,
        engine=m.engine,
        source=m.source,  # type: ignore[arg-type]
        path=Path(m.path) if m.path else None,
        arch=m.arch,
        remote_model=m.remote_model,
    )


def generator_adapters(services: Services, models: list[ModelInfo]) -> dict[str, Any]:
    """The generator's adapter data (rendered into the page as JSON, read by static/js/gen-adapters.js): the
    installed adapters, per model what it can take (adapter kinds, hires fix), its family, its native size (what the
    hires panel's final size starts from) and which adapters fit it; the upscalers hires fix may use."""
    adapters = services.generation.adapters.adapters()
    per_model: dict[str, Any] = {}
    for m in models:
        caps = services.catalog.capabilities(m)
        ref = _model_ref(m)
        dim = model_context_dim(ref)
        xl = (m.arch or "").startswith("sdxl") or "xl" in m.id.lower()
        per_model[m.id] = {
            "kinds": list(caps.adapters),
            "hires": caps.hires,
            "family_label": family_text(m.arch, dim),
            # The size a job gets with no size chosen (GenerationService.prepare's base).
            "base": 1024 if xl else 512,
            "max_pixels": min(caps.max_pixels, services.settings.max_pixels),
            "fits": [a.id for a in adapters if fits(a, ref, dim)],
        }
    upscalers = [
        {"id": u.id, "name": u.name} for u in services.catalog.upscalers() if u.id not in BUILTIN_HIRES_UPSCALERS
    ]
    return {
        "adapters": [adapter_item(a) for a in adapters if a.kind != "embedding"],
        "models": per_model,
        "upscalers": upscalers,
        "control_types": list(CONTROL_TYPES),
        # The maps a unit may ask Studiolo to make (the others are refused at submit: upload them ready-made).
        "map_types": [
            *BUILTIN_TYPES,
            *(
                t
                for t in MODEL_TYPES
                if any(a.kind == "preprocessor" and a.meta.get("preprocessor") == t for a in adapters)
            ),
        ],
    }


def catalog_tables(services: Services) -> dict[str, Any]:
    """The models page: the models and, in their own table, the adapters with their kind and family."""
    models = services.catalog.models()
    return {
        "models": [
            {
                "id": m.id,
                "engine": m.engine,
                "family_label": family_text(m.arch, model_context_dim(_model_ref(m))) if m.path else (m.arch or "—"),
                "size_bytes": m.size_bytes,
                "is_default": m.is_default,
                "demo": m.demo,
            }
            for m in models
        ],
        "adapters": [adapter_item(a) for a in services.generation.adapters.adapters(fresh=True)],
    }
