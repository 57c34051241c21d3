"""A queued generation job turned into the engine's GenerationRequest: its params, its stored init/mask pictures,
and its adapters (domain/adapters/requests.py). Called by the worker when the job runs (worker.py)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image as PILImage

from studiolo.domain.generation.models import Job
from studiolo.engines.base import GenerationRequest, ModelRef
from studiolo.engines.noise import variation_seeds
from studiolo.storage.base import ObjectStore


def generation_request(job: Job, model: ModelRef, store: ObjectStore, adapters: Mapping[str, Any]) -> GenerationRequest:
    """``adapters``: the request's adapter fields (loras, controls, reference, hires...), already resolved."""
    p = job.params
    init = mask = None
    # Inputs were validated and normalised to PNG at submit time; only our own files are opened here.
    if "init" in job.input_keys:
        init = PILImage.open(io.BytesIO(store.get(job.input_keys["init"]))).convert("RGB")
    if "mask" in job.input_keys:
        mask = PILImage.open(io.BytesIO(store.get(job.input_keys["mask"]))).convert("L")
    return GenerationRequest(
        model=model,
        prompt=p["final_prompt"],
        negative_prompt=p["final_negative_prompt"],
        seeds=list(job.seeds),
        width=p["width"],
        height=p["height"],
        kind=job.kind,  # type: ignore[arg-type]
        steps=p["steps"],
        guidance=p["guidance"],
        sampler=p["sampler"],
        strength=p["strength"],
        init_image=init,
        mask_image=mask,
        # Jobs queued before these options existed have none.
        scheduler=p.get("scheduler"),
        variation_seeds=variation_seeds(p.get("variation_seed"), len(job.seeds)),
        variation_strength=float(p.get("variation_strength") or 0.0),
        **adapters,
    )
