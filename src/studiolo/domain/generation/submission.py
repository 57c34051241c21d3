"""What a submission resolves and writes: its output size, a queued job's row, and the hashes and keys that make a
resubmission idempotent.

Shared by ``GenerationService.submit`` (one job) and ``submit_batch`` (many, inserted together)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from studiolo.db.base import new_id
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.schemas import RegenerateRequest
from studiolo.domain.generation import styles as st
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.schemas import GenerationParams, JobUrls
from studiolo.engines.schedules import is_automatic
from studiolo.errors import Forbidden, InvalidInput


class WebhookMarker(Protocol):
    """Issue 18 (domain/webhooks): called in the transaction that inserts queued job rows, before the insert; sets
    ``webhook_state`` = "queued" on the rows that have receivers (a per-job ``webhook``, or endpoints of the owner or
    of the submitting API key) and refuses a per-job webhook URL it may not call (422)."""

    def mark(self, session: Session, owner_id: str, rows: list[dict[str, Any]]) -> None: ...


# What GenerationService.prepare resolves a request into: (job params, model id, seeds).
Prepared = tuple[dict[str, Any], str, list[int]]


def resolve_size(p: GenerationParams, turbo_or_xl_base: int) -> tuple[int, int]:
    """The output size asked for as ``size``, ``aspect_ratio`` or ``width`` and ``height``, else the model's native
    square. ``GenerationParams`` already holds to the size rules (rules.size_rules)."""
    if p.width is not None and p.height is not None:
        return p.width, p.height
    if p.size is not None:
        w, h = (int(x) for x in p.size.split("x"))
        return w, h
    if p.aspect_ratio is not None:
        return st.aspect_size(p.aspect_ratio, turbo_or_xl_base)
    return turbo_or_xl_base, turbo_or_xl_base


def check_system_priority(p: GenerationParams, *, as_admin: bool) -> None:
    """Only an administrator may set ``system_priority`` (403 admin_required): it orders the whole queue, ahead of
    the users' turns, while ``priority`` only reorders the submitter's own jobs (issue 13, item 5). Refused rather
    than ignored, so nobody believes they were given a place they were not."""
    if p.system_priority is not None and not as_admin:
        raise Forbidden(
            "Only an administrator may set system_priority; use priority to order your own jobs.",
            code="admin_required",
            details={"field": "system_priority"},
        )


def submit_hash(kind: str, params: dict[str, Any], uploads: dict[str, bytes]) -> str:
    """The request hash of a single submission: kind, parameters and the uploaded images' bytes."""
    h = hashlib.sha256(json.dumps({"kind": kind, "params": params}, sort_keys=True).encode())
    for name in sorted(uploads):
        h.update(name.encode())
        h.update(hashlib.sha256(uploads[name]).digest())
    return h.hexdigest()


def batch_hash(items: Sequence[GenerationParams]) -> str:
    """The request hash of a whole batch, stored on each of its jobs."""
    return submit_hash("batch", {"generations": [p.model_dump(mode="json") for p in items]}, {})


def check_idempotency_key(key: str) -> None:
    if not 1 <= len(key) <= 200:
        raise InvalidInput("Idempotency-Key must be 1-200 characters.", code="invalid_idempotency_key")


def batch_item_key(key: str, index: int) -> str:
    """The idempotency key stored on item ``index`` of a batch sent with Idempotency-Key ``key``.

    A digest keeps it within the column's 200 characters whatever the index, and the unit separator (a control
    character no HTTP header value can carry) keeps it from ever equalling a key sent to POST /generations
    (tests/integration/test_batch_submissions.py::test_idempotency_key_covers_the_whole_batch)."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:40]}\x1f{index}"


def sampling_params(p: GenerationParams) -> dict[str, Any]:
    """A job's sampling options beyond the sampler (issue 14): the sigma schedule and the variation seed. A strength
    without a variation seed draws one at random, as A1111 does for subseed -1; no strength, no variation seed."""
    variation_seed = None
    if p.variation_strength > 0:
        variation_seed = p.variation_seed if p.variation_seed is not None else secrets.randbelow(2**32)
    return {
        "scheduler": None if is_automatic(p.scheduler) else p.scheduler,
        "variation_seed": variation_seed,
        "variation_strength": p.variation_strength if variation_seed is not None else 0.0,
    }


def _adapter_params(job_params: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Issue 19: the LoRAs, ControlNet units, reference and hires fix of the job (else of the image's metadata) as
    request fields. The units' and the reference's pictures are not fields: GenerationService.regenerate passes the
    job's stored ones as inputs."""
    source = job_params if any(k in job_params for k in ("loras", "controls", "reference", "hires")) else meta
    fields: dict[str, Any] = {}
    if source.get("loras"):
        # With the prompt's own <lora:...> tags again too: the plan keeps each LoRA once, the tag's weight winning,
        # so the new job has the same LoRAs in the same order.
        fields["loras"] = [{"name": x["name"], "weight": x["weight"]} for x in source["loras"]]
    if source.get("controls"):
        fields["controls"] = [
            {k: unit[k] for k in ("type", "model", "strength", "start", "end", "preprocess") if k in unit}
            for unit in source["controls"]
        ]
    if reference := source.get("reference"):
        fields["reference_model"] = reference.get("model")
        fields["reference_strength"] = float(reference["strength"])
    if hires := source.get("hires"):
        fields["hires"] = {k: hires[k] for k in ("scale", "upscaler", "strength", "steps") if hires.get(k) is not None}
    return fields


def regenerate_params(img: Image, job: Job | None, req: RegenerateRequest) -> GenerationParams:
    """The request that makes ``img`` again: its settings, with the seed asked for (the same one: the same picture),
    its adapters and hires fix (issue 19)."""
    seed: int | None = img.seed if req.seed == "same" else None if req.seed == "new" else int(req.seed)
    job_params = job.params if job else {}
    meta = img.meta or {}
    adapters = _adapter_params(job_params, meta)
    width, height = img.width, img.height
    if "hires" in adapters:
        # The first pass's size (the job's, or the settings kept with the image): the image itself is the final.
        sized = job_params if "width" in job_params else meta
        width, height = int(sized.get("width", width)), int(sized.get("height", height))
    return GenerationParams(
        prompt=img.prompt,
        negative_prompt=img.negative_prompt,
        style=img.style,
        model=img.model_id,
        width=width,
        height=height,
        steps=img.steps,
        guidance=img.guidance,
        sampler=img.sampler if img.sampler not in (None, "default") else None,
        scheduler=job_params.get("scheduler"),
        seed=seed,
        # This image's own variation seed (the job's plus its index), and only for its own seed.
        variation_seed=meta.get("variation_seed") if req.seed == "same" else None,
        variation_strength=float(meta.get("variation_strength") or 0.0) if req.seed == "same" else 0.0,
        n=req.n,
        strength=float(job_params.get("strength", 0.75)),
        tags=list(img.tags or []),
        **adapters,
    )


API = "/api/v1"
JOB_STATUS_FILTERS = ("queued", "running", "succeeded", "failed", "canceled")


def job_urls(job_id: str) -> JobUrls:
    base = f"{API}/jobs/{job_id}"
    return JobUrls(get=base, cancel=f"{base}/cancel", events=f"{base}/events")


def queued_event(position: int | None, capped: bool) -> dict[str, Any]:
    """The event stream's ``queued`` event; ``capped`` (only when true) as in JobView.queue_position_capped."""
    return {"type": "queued", "position": position, **({"capped": True} if capped else {})}


def check_status_filter(status: str | None) -> None:
    """A job list's ``status`` filter: absent, or one of JOB_STATUS_FILTERS (422 invalid_status)."""
    if status is not None and status not in JOB_STATUS_FILTERS:
        raise InvalidInput(
            f"status must be one of {', '.join(JOB_STATUS_FILTERS)}.",
            code="invalid_status",
            details={"status": status},
        )


def job_row(
    owner_id: str,
    kind: str,
    p: GenerationParams,
    prepared: Prepared,
    *,
    idempotency_key: str | None,
    request_hash: str | None,
    input_keys: dict[str, str],
    max_attempts: int,
    now: datetime,
    api_key_id: str | None = None,
) -> dict[str, Any]:
    """A queued generation's row, for a Core insert into ``jobs`` (``p``'s system_priority already authorized)."""
    params, model_id, seeds = prepared
    webhook = {"url": p.webhook, "events": p.webhook_events_filter} if p.webhook else None
    return queued_row(
        owner_id,
        kind,
        params,
        model_id,
        seeds,
        priority=p.priority,
        system_priority=p.system_priority or 0,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        input_keys=input_keys,
        max_attempts=max_attempts,
        now=now,
        webhook=webhook,
        api_key_id=api_key_id,
    )


def queued_row(
    owner_id: str,
    kind: str,
    params: dict[str, Any],
    model_id: str,
    seeds: list[int],
    *,
    priority: int = 0,
    system_priority: int = 0,
    idempotency_key: str | None,
    request_hash: str | None,
    input_keys: dict[str, str],
    max_attempts: int,
    now: datetime,
    webhook: dict[str, Any] | None = None,
    api_key_id: str | None = None,
) -> dict[str, Any]:
    """A queued job's row of any kind (generation, upscale), for a Core insert into ``jobs``. ``webhook_state`` is
    set by the webhooks marker as the row is inserted (GenerationService.insert_queued)."""
    return {
        "id": new_id(),
        "owner_id": owner_id,
        "kind": kind,
        "status": "queued",
        "params": params,
        "model_id": model_id,
        "seeds": seeds,
        "priority": priority,
        "system_priority": system_priority,
        "max_running": 0,  # set from the owner's plan by the billing gate (GenerationService.insert_queued)
        "progress_step": 0,
        "progress_total": params["steps"],
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_after": now,
        "cancel_requested": False,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "input_keys": input_keys,
        "cost": 0.0,
        "timings": {},
        "created_at": now,
        "webhook": webhook,
        "webhook_state": None,
        "api_key_id": api_key_id,
    }
