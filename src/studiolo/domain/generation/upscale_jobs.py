"""The worker's side of an upscale job (upscale.py queues them): read the source image when the job runs, and make
the output a new gallery image linked to it, with the source's prompt and settings.

The source is read at run time, not copied at submit time: an upscale costs no storage until it runs, and a source
purged meanwhile fails the job with ``source_image_missing`` (not retried: it will not come back) rather than
crashing it (tests/integration/test_upscale.py).
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import select

from studiolo.db.session import Database
from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.service import GalleryService, StoredFiles
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.outputs import store_image, write_outputs
from studiolo.domain.safety.outputs import OutputGuard
from studiolo.engines.base import EngineError, GeneratedImage, GenerationRequest, ModelRef
from studiolo.storage.base import ObjectNotFound, ObjectStore

# A1111's names for an upscale made after generation (its "Extras" tab), in the PNG parameters text.
A1111_UPSCALER_KEY = "Postprocess upscaler"
A1111_FACTOR_KEY = "Postprocess upscale by"


def _missing(job: Job) -> EngineError:
    return EngineError(
        f"The image to upscale ({job.params['source_image_id']}) was deleted before the job ran.",
        code="source_image_missing",
    )


def upscale_request(db: Database, store: ObjectStore, job: Job, model: ModelRef) -> GenerationRequest:
    """The engine request of an upscale job, with its source image read from the store (its owner's only)."""
    p = job.params
    with db.session() as session:
        key = session.scalar(
            select(Image.original_key).where(Image.id == p["source_image_id"], Image.owner_id == job.owner_id)
        )
    if key is None:
        raise _missing(job)
    try:
        data = store.get(key)
    except ObjectNotFound:
        raise _missing(job) from None
    source = PILImage.open(io.BytesIO(data)).convert("RGB")  # our own PNG, written by a generation
    return GenerationRequest(
        model=model,
        prompt=p["final_prompt"],
        negative_prompt=p["final_negative_prompt"],
        seeds=list(job.seeds),
        width=p["width"],
        height=p["height"],
        kind="upscale",
        steps=p["steps"],
        guidance=p["guidance"],
        init_image=source,
    )


def write_job_outputs(
    gallery: GalleryService,
    job: Job,
    request: GenerationRequest,
    outputs: list[GeneratedImage],
    written: list[StoredFiles],
    guard: OutputGuard | None = None,
) -> list[dict[str, Any]]:
    """The rows of a finished image job: an upscale's (new images linked to their source, with its settings) or any
    other kind's (outputs.write_outputs)."""
    if job.kind == "upscale":
        return write_upscale_outputs(gallery, job, outputs, written, guard)
    return write_outputs(gallery, job, request, outputs, written, guard)


def write_upscale_outputs(
    gallery: GalleryService,
    job: Job,
    outputs: list[GeneratedImage],
    written: list[StoredFiles],
    guard: OutputGuard | None = None,
) -> list[dict[str, Any]]:
    """Store each output as an image whose prompt, model, seed and settings are its source's, with its own size, kind
    "upscale", ``parent_id`` the source, and the upscaler and factor in its metadata and PNG parameters (as A1111
    writes an upscale made in its Extras tab). Appends the files to ``written`` before storing them, like
    outputs.write_outputs (which writes every other kind's)."""
    p = job.params
    src = p["source"]
    rows: list[dict[str, Any]] = []
    parent = None  # the source's stored file: the parent ingredient of the upscale's Content Credentials
    if guard is not None and guard.credentials is not None:
        with gallery.db.session() as session:
            key = session.scalar(select(Image.original_key).where(Image.id == p["source_image_id"]))
        parent = gallery.read(key) if key else None
    for k, out in enumerate(outputs):
        width, height = out.image.width, out.image.height
        meta = {
            **src["metadata"],
            "job_id": job.id,
            "batch_index": k,
            "kind": "upscale",
            "parent_id": p["source_image_id"],
            "upscaler": p["upscaler"],
            "upscale_factor": p["factor"],
            "width": width,
            "height": height,
            "generator": "studiolo",
        }
        sampler = src["sampler"] or "default"
        parameters = imaging.a1111_parameters(
            prompt=p["final_prompt"],
            negative_prompt=p["final_negative_prompt"],
            steps=src["steps"],
            sampler=imaging.a1111_sampler_name(sampler),
            cfg_scale=src["guidance"],
            seed=src["seed"],
            width=width,
            height=height,
            model=src["model"],
            extra={A1111_UPSCALER_KEY: p["upscaler_name"], A1111_FACTOR_KEY: p["factor"]},
        )
        row = store_image(
            gallery,
            job,
            k,
            out.image,
            parameters,
            meta,
            written,
            model_id=src["model"],
            seed=src["seed"],
            steps=src["steps"],
            guidance=src["guidance"],
            sampler=src["sampler"],
            parent_id=p["source_image_id"],
            guard=guard,
            parent=parent,
        )
        if row is not None:
            rows.append(row)
    return rows
