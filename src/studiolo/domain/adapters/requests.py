"""A queued job's adapters turned into what the engine takes (issue 19): LoraSpec, ControlSpec, ReferenceSpec,
HiresSpec and the embeddings' AdapterRefs, from the job's params and stored inputs. Called by the worker when it
builds the GenerationRequest (domain/generation/worker.py)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image as PILImage

from studiolo.domain.adapters.catalog import AdapterCatalog, AdapterGone
from studiolo.domain.adapters.inputs import REFERENCE_INPUT, control_input
from studiolo.domain.generation.catalog import ModelCatalog
from studiolo.domain.generation.upscale import MODEL_UPSCALE_STEPS, model_upscale_guidance
from studiolo.engines.base import (
    ControlSpec,
    Engine,
    EngineError,
    GenerationRequest,
    HiresSpec,
    LoraSpec,
    ReferenceSpec,
)
from studiolo.engines.preprocess import MODEL_TYPES, PREPROCESSORS_EXTRA
from studiolo.errors import StudioloError
from studiolo.storage.base import ObjectNotFound, ObjectStore


def _picture(store: ObjectStore, input_keys: Mapping[str, str], name: str) -> PILImage.Image:
    key = input_keys.get(name)
    if key is None:
        raise EngineError(f"The job's {name} picture was not kept.", code="input_missing")
    try:
        # Validated and normalised to PNG at submit time; only our own files are opened here.
        return PILImage.open(io.BytesIO(store.get(key))).convert("RGB")
    except ObjectNotFound as exc:
        raise EngineError(f"The job's {name} picture is missing from storage.", code="input_missing") from exc


def adapter_fields(
    params: Mapping[str, Any],
    input_keys: Mapping[str, str],
    *,
    adapters: AdapterCatalog,
    catalog: ModelCatalog,
    engines: Mapping[str, Engine],
    store: ObjectStore,
) -> dict[str, Any]:
    """GenerationRequest keyword arguments for the job's adapters (none: an empty dict). An adapter removed since
    the job was queued fails it (adapter_unavailable, not retried)."""
    fields: dict[str, Any] = {}
    loras = params.get("loras") or []
    controls = params.get("controls") or []
    reference = params.get("reference")
    try:
        if loras:
            refs = adapters.refs([x["name"] for x in loras])
            fields["loras"] = [LoraSpec(ref, float(x["weight"])) for ref, x in zip(refs, loras, strict=True)]
        if params.get("embeddings"):
            fields["embeddings"] = adapters.refs(list(params["embeddings"]))
        if controls:
            refs = adapters.refs([unit["model"] for unit in controls])
            fields["controls"] = [
                ControlSpec(
                    adapter=ref,
                    type=str(unit["type"]),
                    image=_picture(store, input_keys, control_input(i)),
                    strength=float(unit.get("strength", 1.0)),
                    start=float(unit.get("start", 0.0)),
                    end=float(unit.get("end", 1.0)),
                    preprocess=bool(unit.get("preprocess", True)),
                )
                for i, (ref, unit) in enumerate(zip(refs, controls, strict=True))
            ]
            # Maps made by a model (depth) need the installed preprocessors (engines/preprocess.py).
            if any(unit.get("preprocess", True) and unit["type"] in MODEL_TYPES for unit in controls):
                fields["extra"] = {PREPROCESSORS_EXTRA: [a.ref() for a in adapters.adapters("preprocessor")]}
        if reference:
            (ref,) = adapters.refs([reference["model"]])
            fields["reference"] = ReferenceSpec(
                ref, _picture(store, input_keys, REFERENCE_INPUT), float(reference["strength"])
            )
    except AdapterGone as exc:
        raise EngineError(str(exc), code="adapter_unavailable") from exc
    hires = params.get("hires")
    if hires:
        upscaler = str(hires["upscaler"])
        fields["hires"] = HiresSpec(
            scale=float(hires["scale"]),
            upscaler=upscaler,
            strength=float(hires["strength"]),
            steps=int(hires.get("steps") or 0),
            upscale=None if upscaler in ("lanczos", "latent") else _model_upscale(upscaler, catalog, engines),
        )
    return fields


def _model_upscale(upscaler_id: str, catalog: ModelCatalog, engines: Mapping[str, Engine]) -> Any:
    """A function enlarging pictures with the installed upscaler ``upscaler_id``, run by the engine serving it."""
    try:
        model = catalog.resolve(upscaler_id)
    except StudioloError as exc:
        raise EngineError(f"Hires upscaler '{upscaler_id}': {exc}", code="adapter_unavailable") from exc
    engine = engines[model.engine]
    guidance = model_upscale_guidance(model.arch)

    def upscale(images: list[PILImage.Image], width: int, height: int) -> list[PILImage.Image]:
        out = []
        for image in images:
            request = GenerationRequest(
                model=model,
                prompt="",
                seeds=[0],
                width=width,
                height=height,
                kind="upscale",
                steps=MODEL_UPSCALE_STEPS,
                guidance=guidance,
                init_image=image,
            )
            out.append(engine.generate(request, lambda *_a, **_k: None, lambda: False)[0].image)
        return out

    return upscale
