"""Upscale: enlarge one of a user's images 2x or 4x, as a job of kind "upscale" whose output is a new gallery image
linked to its source (``images.parent_id``).

A request names an upscaler: "lanczos" (built in, engines/upscale.py) or an installed upscaler model (diffusers' SD
x4 or latent x2 upscaler, engines/diffusers_upscale.py). It is checked here (the upscaler, its factors, the result's
size) and queued like a generation (same queue, idempotency keys, rate limit); the job's ``model_id`` is the
upscaler, so workers claim it as they claim a model's jobs. The worker reads the source image when the job runs
(upscale_jobs.py). Tests: tests/integration/test_upscale.py.
"""

from __future__ import annotations

from typing import Any

from studiolo.db.base import utcnow
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.schemas import RegenerateRequest
from studiolo.domain.gallery.service import refuse_if_held
from studiolo.domain.generation import rules
from studiolo.domain.generation.catalog import UpscalerInfo
from studiolo.domain.generation.schemas import JobAccepted, UpscaleRequest, UpscalerList, UpscalerView
from studiolo.domain.generation.service import GenerationService
from studiolo.domain.generation.submission import check_idempotency_key, queued_row, submit_hash
from studiolo.engines.esrgan_files import ESRGAN_ARCHS
from studiolo.errors import Conflict, InvalidInput

# Sampling settings of model upscalers: the SD x4 upscaler's own guidance default; the latent upscaler is run
# without guidance, as its model card does. Lanczos is one step.
MODEL_UPSCALE_STEPS = 20
_MODEL_GUIDANCE = {"sd-x4-upscaler": 9.0, "sd-x2-latent-upscaler": 0.0}


def model_upscale_guidance(arch: str | None) -> float:
    """The guidance an upscaler model is run with (those that take none ignore it)."""
    return _MODEL_GUIDANCE.get(arch or "", 7.0)


class UpscaleService:
    """Queues upscale jobs and lists the upscalers a request may name."""

    def __init__(self, generation: GenerationService):
        self.generation = generation

    def upscalers(self) -> UpscalerList:
        return UpscalerList(
            items=[
                UpscalerView(id=u.id, name=u.name, factors=list(u.factors)) for u in self.generation.catalog.upscalers()
            ]
        )

    def _upscaler(self, upscaler_id: str) -> UpscalerInfo:
        known = self.generation.catalog.upscalers()
        found = next((u for u in known if u.id == upscaler_id), None)
        if found is not None:
            return found
        is_model = upscaler_id in self.generation.catalog.ids()
        why = "is a model that draws images, not an upscaler" if is_model else "is not an upscaler installed here"
        raise InvalidInput(
            f"'{upscaler_id}' {why}. Upscalers: {', '.join(u.id for u in known)} (GET /api/v1/upscalers).",
            code="unknown_upscaler",
            details={"upscaler": upscaler_id, "upscalers": [u.id for u in known], "field": "upscaler"},
        )

    def submit(
        self, owner_id: str, image_id: str, req: UpscaleRequest, *, idempotency_key: str | None = None
    ) -> tuple[JobAccepted, bool]:
        """Queue an upscale of the owner's image ``image_id``; returns (accepted view, created), ``created`` False for
        an idempotent replay. 404 for an image that is not the owner's, 422 for an unknown upscaler, a factor it does
        not offer, or a result over the allowed pixels."""
        gen = self.generation
        request_hash = None
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            request_hash = submit_hash("upscale", {"image_id": image_id, **req.model_dump(mode="json")}, {})
            existing = gen.replay(owner_id, [idempotency_key], request_hash)
            if existing:
                return existing[0], False
        upscaler = self._upscaler(req.upscaler)
        if req.factor not in upscaler.factors:
            offered = " or ".join(str(f) for f in upscaler.factors)
            raise InvalidInput(
                f"{upscaler.name} enlarges {offered} times (got factor {req.factor}).",
                code="invalid_upscale_factor",
                details={"factor": req.factor, "factors": list(upscaler.factors), "field": "factor"},
            )
        model = gen.catalog.resolve(upscaler.id)  # 409 model_unavailable when an upscaler model's files are gone
        max_pixels = min(gen.limits.max_pixels, gen.engines[model.engine].capabilities(model).max_pixels)
        with gen.db.session() as session:
            source = gen.gallery.get_row(session, owner_id, image_id)
            refuse_if_held(source)  # an upscale would hand back the held original's pixels (issue 17)
            width, height = source.width * req.factor, source.height * req.factor
            rules.refuse(rules.pixels_rules(width, height, max_pixels, ("factor",)))
            params = _job_params(source, upscaler, req.factor, width, height)
            seeds = [source.seed]
        if gen.moderator is not None:  # the new image carries the source's prompt: checked as a new request's is
            gen.moderator.check(params["final_prompt"], params["final_negative_prompt"])
        row = queued_row(
            owner_id,
            "upscale",
            params,
            upscaler.id,
            seeds,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            input_keys={},
            max_attempts=gen.settings.max_attempts,
            now=utcnow(),
        )
        # The same insert as a generation's: queue position, wake-up, events, and an idempotency race resolved.
        accepted, created = gen.insert_queued(owner_id, [row])
        return accepted[0], created

    def regenerate(self, owner_id: str, image_id: str, req: RegenerateRequest) -> JobAccepted:
        """Make an image again (``POST /images/{id}/regenerate``): an upscaled one by upscaling its source again with
        the same upscaler and factor (the seed choice changes nothing there), any other by
        ``GenerationService.regenerate``. 409 ``input_missing`` when the source was purged."""
        gen = self.generation
        with gen.db.session() as session:
            image = gen.gallery.get_row(session, owner_id, image_id)
            kind, parent_id, meta = image.kind, image.parent_id, dict(image.meta or {})
        if kind != "upscale":
            return gen.regenerate(owner_id, image_id, req)
        if parent_id is None:
            raise Conflict(
                "The image this one was upscaled from is no longer stored, so it cannot be upscaled again.",
                code="input_missing",
            )
        again = UpscaleRequest(factor=int(meta["upscale_factor"]), upscaler=str(meta["upscaler"]))
        return self.submit(owner_id, parent_id, again)[0]


def _job_params(source: Image, upscaler: UpscalerInfo, factor: int, width: int, height: int) -> dict[str, Any]:
    """An upscale job's params: what it makes (the source, upscaler, factor, new size), how (steps, guidance), and
    the source's prompt and generation settings, which the new image keeps (upscale_jobs.py)."""
    meta = dict(source.meta or {})
    # Lanczos and the ESRGAN-family nets (engines/esrgan.py) are one pass with no sampling steps nor guidance.
    builtin = upscaler.arch is None or upscaler.arch in ESRGAN_ARCHS
    return {
        "source_image_id": source.id,
        "factor": factor,
        "upscaler": upscaler.id,
        "upscaler_name": upscaler.name,
        "width": width,
        "height": height,
        "source_width": source.width,
        "source_height": source.height,
        "steps": 1 if builtin else MODEL_UPSCALE_STEPS,
        "guidance": 0.0 if builtin else model_upscale_guidance(upscaler.arch),
        "sampler": None,
        "strength": None,
        "n": 1,
        "prompt": source.prompt,
        "negative_prompt": source.negative_prompt,
        "style": source.style,
        "final_prompt": str(meta.get("final_prompt") or source.prompt),
        "final_negative_prompt": str(meta.get("final_negative_prompt") or source.negative_prompt),
        "tags": list(source.tags or []),
        "seed": source.seed,
        "source": {
            "model": source.model_id,
            "seed": source.seed,
            "steps": source.steps,
            "guidance": source.guidance,
            "sampler": source.sampler,
            "metadata": meta,
        },
    }
