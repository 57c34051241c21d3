"""What a finished generation leaves: its files in the object store and its image rows, committed together with
the job's success while the worker still holds the job's lease (exactly-once outputs, see worker.py).

A batch of quick jobs is committed in one transaction with one insert of all their image rows (and, on
PostgreSQL, one UPDATE of all their job rows): for jobs of milliseconds, a commit per job was most of the cost
(bench/queue.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import JSON, bindparam, insert, text, update

from studiolo.db.base import UTCDateTime, new_id, utcnow
from studiolo.db.session import Database
from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.service import GalleryService, StoredFiles, search_text
from studiolo.domain.generation.charges import ChargeGate
from studiolo.domain.generation.infotext import a1111_prompts, adapter_meta, adapter_settings
from studiolo.domain.generation.models import JOBS, Job
from studiolo.domain.safety.outputs import OutputGuard
from studiolo.domain.safety.ports import Claim
from studiolo.engines.base import AdapterRef, GeneratedImage, GenerationRequest
from studiolo.engines.schedules import A1111_LABELS
from studiolo.settings import Settings

# A job's success, in one statement: only while this worker still holds its lease (exactly-once outputs).
_SUCCEED = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"), JOBS.c.status == "running", JOBS.c.lease_owner == bindparam("worker_id"))
    .values(
        status="succeeded",
        finished_at=bindparam("now", type_=UTCDateTime()),
        lease_owner=None,
        lease_expires_at=None,
        error_code=None,
        error_message=None,
        progress_step=bindparam("steps"),
        progress_total=bindparam("steps"),
        progress_image=bindparam("image"),
        duration_seconds=bindparam("duration"),
        timings=bindparam("timings", type_=JSON()),
        cost=bindparam("cost"),
        blocked_outputs=bindparam("blocked"),
    )
    .returning(JOBS.c.id)
)


# PostgreSQL: the same for a whole batch in one statement (one round trip instead of one per job).
_SUCCEED_MANY_PG = text(
    """
    UPDATE jobs SET status = 'succeeded', finished_at = :now, lease_owner = NULL, lease_expires_at = NULL,
        error_code = NULL, error_message = NULL, progress_step = v.steps, progress_total = v.steps,
        progress_image = v.image, duration_seconds = v.duration, timings = CAST(v.timings AS json), cost = v.cost,
        blocked_outputs = v.blocked
    FROM unnest(CAST(:ids AS text[]), CAST(:workers AS text[]), CAST(:steps AS integer[]),
                CAST(:durations AS float8[]), CAST(:timings AS text[]), CAST(:costs AS float8[]),
                CAST(:images AS integer[]), CAST(:blocked AS integer[]))
        AS v(id, worker_id, steps, duration, timings, cost, image, blocked)
    WHERE jobs.id = v.id AND jobs.status = 'running' AND jobs.lease_owner = v.worker_id
    RETURNING jobs.id
    """
).bindparams(bindparam("now", type_=UTCDateTime()))


# Its array parameters, from the keys of _SUCCEED's values.
_SUCCEED_MANY_COLUMNS = (
    ("ids", "job_id"),
    ("workers", "worker_id"),
    ("steps", "steps"),
    ("durations", "duration"),
    ("costs", "cost"),
    ("images", "image"),
    ("blocked", "blocked"),
)


@dataclass
class Finished:
    """A generated job whose files are written and whose rows wait for the success commit."""

    job: Job
    worker_id: str  # the lease owner the commit must still be
    timings: dict[str, float]  # seconds per phase of this attempt
    rows: list[dict[str, Any]]  # image rows (ORM attribute names), ids assigned
    written: list[StoredFiles]
    # The engine's last progress_image: the last image when it made them one by one (the progress ends there).
    image: int = 0
    blocked: int = 0  # outputs the output check refused to store (issue 17)


def write_outputs(
    gallery: GalleryService,
    job: Job,
    request: GenerationRequest,
    outputs: list[GeneratedImage],
    written: list[StoredFiles],
    guard: OutputGuard | None = None,
) -> list[dict[str, Any]]:
    """Encode and store each output (PNG with its parameters, thumbnails); appends the files to ``written`` before
    they are stored (the caller discards them if anything fails) and returns the image rows to insert. ``guard``:
    the output check (issue 17); an output it blocks gets no row."""
    p = job.params
    rows: list[dict[str, Any]] = []
    # img2img / inpaint: the user's upload is the edit's parent in the Content Credentials.
    init_key = (job.input_keys or {}).get("init") if guard is not None and guard.credentials is not None else None
    parent = gallery.read(init_key) if init_key else None
    refs = adapter_refs(request)
    prompt, negative_prompt = a1111_prompts(p)
    for k, out in enumerate(outputs):
        sampler = out.sampler or request.sampler or "default"
        # Hires fix: the settings' size is the first pass's (what the request asked, A1111's "Size"); the image is
        # ``hires.scale`` times larger.
        width, height = (p["width"], p["height"]) if p.get("hires") else (out.image.width, out.image.height)
        meta = {
            "job_id": job.id,
            "batch_index": k,
            "kind": job.kind,
            "prompt": p["prompt"],
            "negative_prompt": p["negative_prompt"],
            "final_prompt": p["final_prompt"],
            "final_negative_prompt": p["final_negative_prompt"],
            "style": p["style"],
            "model": job.model_id,
            "seed": out.seed,
            "steps": p["steps"],
            "guidance": p["guidance"],
            "sampler": sampler,
            "width": width,
            "height": height,
            "strength": p["strength"] if job.kind != "txt2img" else None,
            # Issue 14; jobs queued before have none of these (automatic schedule, no variation).
            "scheduler": p.get("scheduler"),
            "variation_seed": out.variation_seed,
            "variation_strength": p.get("variation_strength") if out.variation_seed is not None else None,
            "generator": "studiolo",
            # Issue 19: LoRAs, embeddings, ControlNet units (not their pictures), reference, hires fix; only when used.
            **adapter_meta(p),
        }
        if out.cost is not None:  # a hosted provider's charge for this image, in US dollars (issue 18)
            meta["provider_cost"] = out.cost
        parameters = imaging.a1111_parameters(
            prompt=prompt,
            negative_prompt=negative_prompt,
            steps=p["steps"],
            sampler=imaging.a1111_sampler_name(sampler),
            cfg_scale=p["guidance"],
            seed=out.seed,
            width=width,
            height=height,
            model=job.model_id,
            extra={**a1111_extras(meta), **adapter_settings(p, refs)},
        )
        row = store_image(
            gallery,
            job,
            k,
            out.image,
            parameters,
            meta,
            written,
            model_id=job.model_id,
            seed=out.seed,
            steps=p["steps"],
            guidance=p["guidance"],
            sampler=sampler,
            guard=guard,
            parent=parent,
        )
        if row is not None:
            rows.append(row)
    return rows


def store_image(
    gallery: GalleryService,
    job: Job,
    index: int,
    image: PILImage.Image,
    parameters: str,
    meta: dict[str, Any],
    written: list[StoredFiles],
    *,
    model_id: str,
    seed: int,
    steps: int,
    guidance: float,
    sampler: str | None,
    parent_id: str | None = None,
    guard: OutputGuard | None = None,
    parent: bytes | None = None,
) -> dict[str, Any] | None:
    """Encode ``image`` as PNG (A1111 ``parameters``, our ``meta``) with thumbnails, store the files (appended to
    ``written`` first) and return its image row: the job's prompt, style and tags, the settings given.

    ``guard`` (issue 17) checks and marks the image first and signs the PNG: None is returned, and nothing stored,
    for an image the owner's NSFW policy blocks. ``parent``: the image this one was made from (Content Credentials)."""
    p = job.params
    thumbnail_source = image
    nsfw_score: float | None = None
    review_state: str | None = None
    if guard is not None:
        guarded = guard.inspect(job.owner_id, image)
        if guarded is None:
            return None
        image, thumbnail_source = guarded.image, guarded.thumbnail_source
        nsfw_score, review_state = guarded.nsfw_score, guarded.review_state
        meta = {**meta, "safety": guarded.safety}
    png = imaging.encode_png(image, parameters=parameters, metadata=meta)
    if guard is not None:
        claim = Claim(
            title=f"{job.id}-{index}.png",
            model=model_id,
            kind=job.kind,
            photo_input=job.kind in ("img2img", "inpaint"),
            parent=parent,
            generation={k: meta.get(k) for k in _CLAIMED if meta.get(k) is not None},
        )
        png, signed = guard.seal(png, claim)
        meta["safety"] = {**meta["safety"], "c2pa": signed}
    files = gallery.write_files(png, imaging.make_thumbnails(thumbnail_source), written)
    return {
        "id": new_id(),
        "owner_id": job.owner_id,
        "job_id": job.id,
        "batch_index": index,
        "kind": job.kind,
        "parent_id": parent_id,
        "prompt": p["prompt"],
        "negative_prompt": p["negative_prompt"],
        "style": p["style"],
        "model_id": model_id,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "sampler": sampler,
        "width": image.width,
        "height": image.height,
        "original_key": files.original_key,
        "thumbnail_keys": files.thumbnail_keys,
        "size_bytes": files.size_bytes,
        "meta": meta,
        "tags": list(p.get("tags") or []),
        "search_text": search_text(p["prompt"], p.get("tags") or []),
        "starred": False,
        "public": False,
        "created_at": utcnow(),
        "nsfw_score": nsfw_score,
        "review_state": review_state,
        "description_id": p.get("description_id"),
    }


# What the org.studiolo.generation assertion of a signed image says (from its metadata).
_CLAIMED = ("prompt", "negative_prompt", "style", "model", "seed", "steps", "guidance", "sampler", "width", "height")


def a1111_extras(meta: dict[str, Any]) -> dict[str, imaging.ParamValue]:
    """The settings A1111 writes after the standard ones, as it names them: the schedule when it is not automatic,
    an image-to-image strength, the variation seed and its strength when one was used."""
    extras: dict[str, imaging.ParamValue] = {}
    if meta.get("scheduler"):
        extras["Schedule type"] = A1111_LABELS.get(meta["scheduler"], meta["scheduler"])
    if meta.get("kind") in ("img2img", "inpaint") and meta.get("strength") is not None:
        extras["Denoising strength"] = meta["strength"]
    if meta.get("variation_seed") is not None:
        extras["Variation seed"] = meta["variation_seed"]
        extras["Variation seed strength"] = meta["variation_strength"]
    return extras


def adapter_refs(request: GenerationRequest) -> dict[str, AdapterRef]:
    """The adapters a request applies, by id: whose hashes the A1111 text records."""
    refs = [lora.adapter for lora in request.loras] + list(request.embeddings)
    refs += [unit.adapter for unit in request.controls]
    if request.reference is not None:
        refs.append(request.reference.adapter)
    return {ref.id: ref for ref in refs}


def _success_values(settings: Settings, finished: Finished, now: datetime) -> dict[str, Any]:
    """The values ``_SUCCEED`` sets for one job."""
    job, p = finished.job, finished.job.params
    started = job.started_at
    megapixels = p["width"] * p["height"] / 1_000_000
    return {
        "job_id": job.id,
        "worker_id": finished.worker_id,
        "now": now,
        "steps": p["steps"],
        "image": finished.image,
        "blocked": finished.blocked,
        "duration": (now - started).total_seconds() if started else None,
        "timings": {
            "queue_wait": round((started - job.created_at).total_seconds(), 4) if started else None,
            **finished.timings,
        },
        "cost": round(settings.cost_per_megapixel_step * megapixels * p["steps"] * len(finished.rows), 6),
    }


def _provider_costs(done: list[Finished], committed: set[str]) -> dict[str, float]:
    """What hosted providers charged for each committed job that ran at one (issue 18): the sum of its images'."""
    costs: dict[str, float] = {}
    for finished in done:
        charged = [r["meta"]["provider_cost"] for r in finished.rows if "provider_cost" in (r.get("meta") or {})]
        if finished.job.id in committed and charged:
            costs[finished.job.id] = round(sum(charged), 6)
    return costs


def commit_successes(
    db: Database, settings: Settings, done: list[Finished], gate: ChargeGate | None = None
) -> set[str]:
    """One transaction: each job marked succeeded if this worker still holds its lease, the image rows of those jobs
    inserted with one statement, and (billing on) their charges captured for the images made. Returns the ids of
    the jobs committed."""
    now = utcnow()
    values = [_success_values(settings, finished, now) for finished in done]
    with db.session() as session:
        conn = session.connection()
        if len(values) > 1 and not db.is_sqlite:
            params: dict[str, Any] = {name: [v[key] for v in values] for name, key in _SUCCEED_MANY_COLUMNS}
            params["timings"] = [json.dumps(v["timings"]) for v in values]
            committed = set(conn.scalars(_SUCCEED_MANY_PG, {**params, "now": now}))
        else:
            committed = {v["job_id"] for v in values if conn.execute(_SUCCEED, v).first() is not None}
        rows = [row for finished in done if finished.job.id in committed for row in finished.rows]
        if rows:
            session.execute(insert(Image), rows)
        for job_id, cost in _provider_costs(done, committed).items():
            session.execute(update(Job).where(Job.id == job_id).values(provider_cost=cost))
        if gate is not None:
            gate.settle(session, {f.job.id: len(f.rows) for f in done if f.job.id in committed})
    return committed
