"""Generation: turn a request into a durable job, and report on jobs, styles and usage.

The HTTP API (which the web studio uses) and the CLI submit through ``submit``; ``submit_batch``
queues many txt2img jobs at once, all or none.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.dispatch.base import JobDispatch
from studiolo.domain.adapters.catalog import AdapterCatalog
from studiolo.domain.adapters.hires import hires_plan
from studiolo.domain.adapters.inputs import REFERENCE_INPUT, adapter_inputs
from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.schemas import RegenerateRequest
from studiolo.domain.gallery.service import GalleryService, image_urls
from studiolo.domain.generation import analytics, rules, user_styles
from studiolo.domain.generation import styles as st
from studiolo.domain.generation.catalog import ModelCatalog
from studiolo.domain.generation.events import EventBus
from studiolo.domain.generation.models import JOBS, Job
from studiolo.domain.generation.queue import JobQueue
from studiolo.domain.generation.schemas import (
    BatchAccepted,
    GenerationParams,
    JobAccepted,
    JobError,
    JobOutput,
    JobPage,
    JobProgress,
    JobView,
    Stats,
    StyleCatalog,
    StyleCreate,
    StyleView,
)
from studiolo.domain.generation.submission import (
    JOB_STATUS_FILTERS,
    Prepared,
    WebhookMarker,
    batch_hash,
    batch_item_key,
    check_idempotency_key,
    check_status_filter,
    check_system_priority,
    job_row,
    job_urls,
    queued_event,
    regenerate_params,
    resolve_size,
    sampling_params,
    submit_hash,
)
from studiolo.domain.ownership import get_owned
from studiolo.domain.safety.prompts import PromptModerator
from studiolo.domain.understanding.models import owned_description
from studiolo.engines.base import Engine, JobKind
from studiolo.errors import Conflict, InvalidInput, StudioloError
from studiolo.settings import Settings
from studiolo.storage.base import ObjectNotFound, ObjectStore

# Built once: a statement whose values arrive as parameters is compiled once and cached.
_INSERT_JOB = insert(JOBS)


@dataclass(frozen=True)
class Upload:
    """A validated init or mask image, as bytes of a normalised PNG."""

    png: bytes


class GenerationService:
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        queue: JobQueue,
        dispatch: JobDispatch,
        events: EventBus,
        catalog: ModelCatalog,
        gallery: GalleryService,
        store: ObjectStore,
        engines: dict[str, Engine],
        moderator: PromptModerator | None = None,
        adapters: AdapterCatalog | None = None,
    ):
        self.db = db
        self.settings = settings
        self.queue = queue
        self.dispatch = dispatch
        self.events = events
        self.catalog = catalog
        self.gallery = gallery
        self.store = store
        self.engines = engines
        self.moderator = moderator
        # Issue 19: LoRAs, embeddings, ControlNets and IP-Adapters a request may name (domain/adapters).
        self.adapters = adapters or AdapterCatalog(db, settings)
        self.webhooks: WebhookMarker | None = None  # set by services.py (domain/webhooks)
        self.limits = rules.GenerationLimits.from_settings(settings)
        # Given to every validation of a request, so it checks the configured limits with the fixed rules.
        self.validation_context = self.limits.context()

    # -- styles (user_styles.py) -------------------------------------------------------------
    def style_catalog(self, owner_id: str) -> StyleCatalog:
        return user_styles.style_catalog(self.db, owner_id)

    def create_style(self, owner_id: str, data: StyleCreate) -> StyleView:
        return user_styles.create_style(self.db, owner_id, data)

    def delete_style(self, owner_id: str, slug: str) -> None:
        user_styles.delete_style(self.db, owner_id, slug)

    # -- submit ------------------------------------------------------------------------------
    def prepare(self, owner_id: str, p: GenerationParams, kind: JobKind, *, inputs: Collection[str] = ()) -> Prepared:
        """Validate and resolve a request into (job params, model id, seeds); raises 4xx domain errors. ``inputs``:
        the names of the adapter pictures that came as files (domain/adapters/inputs.py)."""
        # The configured limits again: a request validated without them (rules.GenerationLimits.context) holds only
        # to the fixed rules. Same rules, same messages.
        rules.refuse([*rules.prompt_rules(p.prompt, self.limits), *rules.images_rules(p.n, self.limits)])
        model = self.catalog.resolve(p.model)
        engine = self.engines[model.engine]
        caps = engine.capabilities(model)
        if not caps.supports(kind):
            raise InvalidInput(f"Model '{model.id}' cannot do {kind}.", code="unsupported_task", details={"kind": kind})
        rules.refuse(rules.model_rules(kind, p.scheduler, p.variation_strength, caps, model.id))
        base = 1024 if (model.arch or "").startswith("sdxl") or "xl" in model.id.lower() else 512
        width, height = resolve_size(p, base)
        # The model may allow fewer pixels than the settings.
        given_as = "size" if p.size else "aspect_ratio" if p.aspect_ratio else "width" if p.width else "model"
        rules.refuse(rules.pixels_rules(width, height, min(self.limits.max_pixels, caps.max_pixels), (given_as,)))
        turbo = st.is_turbo(model.id)
        # A model may bring its own sampling defaults (the demo model: tests/unit/test_demo_catalog.py).
        table = caps.quality_steps or (st.TURBO_QUALITY_STEPS if turbo else st.QUALITY_STEPS)
        steps = p.steps if p.steps is not None else table[p.quality or "standard"]
        fallback = caps.default_guidance if caps.default_guidance is not None else (0.0 if turbo else 7.0)
        guidance = p.guidance if p.guidance is not None else fallback
        style = None
        if p.style:
            style = st.BUILTIN_BY_SLUG.get(p.style)
            if style is None:
                with self.db.session() as session:
                    style = user_styles.owned_style(session, owner_id, p.style)
        final_prompt, final_negative = (
            style.apply(p.prompt, p.negative_prompt) if style else (p.prompt, p.negative_prompt)
        )
        # Issue 19: the adapters, checked against the model (409 adapter_incompatible); <lora:...> tags leave the
        # prompt.
        has_reference = p.reference_image is not None or REFERENCE_INPUT in inputs
        plan = self.adapters.plan(
            prompt=final_prompt,
            negative_prompt=final_negative,
            loras=[lora.model_dump() for lora in p.loras],
            controls=[unit.model_dump() for unit in p.controls],
            reference={"model": p.reference_model, "strength": p.reference_strength} if has_reference else None,
            model=model,
            capabilities=caps,
        )
        final_prompt, final_negative = plan.pop("prompt_for_engine"), plan.pop("negative_for_engine")
        if p.hires is not None:
            upscalers = [u.id for u in self.catalog.upscalers()]
            limit = min(self.limits.max_pixels, caps.max_pixels)
            plan["hires"] = hires_plan(p.hires, kind, caps, model.id, (width, height), steps, limit, upscalers)
        if self.moderator is not None:  # issue 17: refused before it is queued or quoted (safety/prompts.py)
            self.moderator.check(final_prompt, final_negative)
        base_seed = p.seed if p.seed is not None else secrets.randbelow(2**32)
        seeds = [(base_seed + i) % 2**32 for i in range(p.n)]
        params = {
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt,
            "style": p.style,
            "final_prompt": final_prompt,
            "final_negative_prompt": final_negative,
            "width": width,
            "height": height,
            "steps": steps,
            "guidance": guidance,
            "sampler": p.sampler,
            "strength": p.strength,
            "n": p.n,
            "tags": p.tags,
            "seed": p.seed,
            **sampling_params(p),
            # Only what a job uses: a job without adapters keeps the params it always had.
            **{k: v for k, v in plan.items() if v},
        }
        if p.description_id is not None:  # the images keep it (outputs.py); only the caller's own (404 otherwise)
            params["description_id"] = owned_description(self.db, owner_id, p.description_id)
        return params, model.id, seeds

    def validate_upload(self, data: bytes, *, field: str, mode: Literal["RGB", "L"] = "RGB") -> Upload:
        img = imaging.load_upload(
            data,
            max_bytes=self.settings.max_upload_bytes,
            max_pixels=self.settings.max_upload_pixels,
            field=field,
            mode=mode,
        )
        return Upload(png=imaging.encode_png(img, parameters="", metadata={}))

    def submit(
        self,
        owner_id: str,
        p: GenerationParams,
        *,
        kind: JobKind = "txt2img",
        init_image: Upload | None = None,
        mask_image: Upload | None = None,
        idempotency_key: str | None = None,
        as_admin: bool = False,
        api_key_id: str | None = None,
        files: Mapping[str, bytes] | None = None,
        inputs: Mapping[str, Upload] | None = None,
    ) -> tuple[JobAccepted, bool]:
        """Queue a job; returns (accepted view, created). ``created`` is False for an idempotent replay.

        ``as_admin``: the caller is an administrator, who may set ``system_priority``; ``api_key_id``: the key that
        sent it (its webhook endpoints hear of the job). ``files``: uploaded ControlNet/reference pictures by multipart
        field; ``inputs``: those pictures already validated, by input name (a remix passes the job's own)."""
        check_system_priority(p, as_admin=as_admin)
        if kind in ("img2img", "inpaint") and init_image is None:
            raise InvalidInput(f"{kind} needs an init image.", code="missing_init_image")
        if kind == "inpaint" and mask_image is None:
            raise InvalidInput("inpaint needs a mask image.", code="missing_mask_image")
        uploads = {k: u.png for k, u in (("init", init_image), ("mask", mask_image)) if u is not None}
        extra = dict(inputs) if inputs is not None else self._adapter_inputs(owner_id, p, files or {})
        uploads.update({name: u.png for name, u in extra.items()})
        request_hash = None
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            request_hash = submit_hash(kind, p.model_dump(mode="json"), uploads)
            existing = self.replay(owner_id, [idempotency_key], request_hash)
            if existing:
                return existing[0], False
        prepared = self.prepare(owner_id, p, kind, inputs=list(extra))
        input_keys = self._store_inputs(uploads)
        row = job_row(
            owner_id,
            kind,
            p,
            prepared,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            input_keys=input_keys,
            max_attempts=self.settings.max_attempts,
            now=utcnow(),
            api_key_id=api_key_id,
        )
        accepted, created = self.insert_queued(owner_id, [row])
        return accepted[0], created

    def _adapter_inputs(self, owner_id: str, p: GenerationParams, files: Mapping[str, bytes]) -> dict[str, Upload]:
        return adapter_inputs(
            self.db, self.store, owner_id, p, files, lambda data, field: self.validate_upload(data, field=field)
        )

    def _store_inputs(self, uploads: Mapping[str, bytes]) -> dict[str, str]:
        input_keys: dict[str, str] = {}
        for name, png in uploads.items():
            key = imaging.content_key(png, "png", prefix="inputs")
            self.store.put(key, png, "image/png")
            input_keys[name] = key
        return input_keys

    def submit_batch(
        self,
        owner_id: str,
        items: Sequence[GenerationParams],
        *,
        idempotency_key: str | None = None,
        as_admin: bool = False,
    ) -> tuple[BatchAccepted, bool]:
        """Queue a txt2img job per item, all or none; returns (accepted views in item order, created).

        Every item is prepared before anything is written, and an item's refusal keeps its code and status and
        names the item in ``details.index``. An Idempotency-Key covers the whole batch: each job stores a key
        derived from it and the item's index (batch_item_key), and every job the hash of the whole batch."""
        if not items:  # an insert of no rows would be one row of defaults, not none
            raise InvalidInput("A batch needs at least one generation.")
        request_hash = None
        item_keys: list[str | None] = [None] * len(items)
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            request_hash = batch_hash(items)
            keys = [batch_item_key(idempotency_key, i) for i in range(len(items))]
            existing = self.replay(owner_id, keys, request_hash)
            if existing:
                return BatchAccepted(jobs=existing), False
            item_keys = list(keys)
        prepared = []
        item_inputs: list[dict[str, Upload]] = []
        for index, p in enumerate(items):
            try:
                check_system_priority(p, as_admin=as_admin)
                item_inputs.append(self._adapter_inputs(owner_id, p, {}))
                prepared.append(self.prepare(owner_id, p, "txt2img", inputs=list(item_inputs[-1])))
            except StudioloError as exc:
                exc.add_details(index=index)
                raise
        now = utcnow()
        rows = [
            job_row(
                owner_id,
                "txt2img",
                p,
                prep,
                idempotency_key=key,
                request_hash=request_hash,
                input_keys=self._store_inputs({name: u.png for name, u in inputs.items()}),
                max_attempts=self.settings.max_attempts,
                now=now,
            )
            for p, prep, key, inputs in zip(items, prepared, item_keys, item_inputs, strict=True)
        ]
        accepted, created = self.insert_queued(owner_id, rows)
        return BatchAccepted(jobs=accepted), created

    def insert_queued(self, owner_id: str, rows: list[dict[str, Any]]) -> tuple[list[JobAccepted], bool]:
        """Commit queued job rows in one transaction, then wake workers and tell watchers; returns (accepted views,
        True), or (the jobs of a request with the same Idempotency-Key that committed first, False)."""
        try:
            # A Core insert, not an ORM unit of work: submit is the hot path (bench/api.py) and these rows need none
            # of the ORM's bookkeeping. A batch's rows go as one executemany of this one cached statement: 100 rows
            # took 5 ms on SQLite and 11 ms on PostgreSQL, against 41 and 62 ms as one INSERT ... VALUES list,
            # which is compiled anew for every batch size.
            with self.db.session() as session:
                if self.queue.gate is not None:  # billing: refused, or held in this transaction (issue 15)
                    self.queue.gate.reserve(session, owner_id, rows)
                if self.webhooks is not None:  # issue 18: which rows have receivers (sets webhook_state)
                    self.webhooks.mark(session, owner_id, rows)
                session.connection().execute(_INSERT_JOB, rows)
                order = [(row["system_priority"], row["priority"]) for row in rows]
                positions = self.queue.positions_of_new(session, owner_id, order)
        except IntegrityError:
            # Two requests with one Idempotency-Key raced; the other one's rows won.
            request_hash = rows[0]["request_hash"]
            if request_hash is None:
                raise
            existing = self.replay(owner_id, [row["idempotency_key"] for row in rows], request_hash)
            if existing is None:
                raise
            return existing, False
        accepted = [
            JobAccepted(
                id=row["id"],
                status="queued",
                queue_position=place.position,
                queue_position_capped=place.capped,
                urls=job_urls(row["id"]),
            )
            for row, place in zip(rows, positions, strict=True)
        ]
        for row, view in zip(rows, accepted, strict=True):
            self.dispatch.notify(row["id"], row["model_id"])
            self.events.publish(row["id"], queued_event(view.queue_position, view.queue_position_capped))
        return accepted, True

    def replay(self, owner_id: str, keys: Sequence[str], request_hash: str) -> list[JobAccepted] | None:
        """The jobs an earlier request queued under these idempotency keys (one per key, in order); None if there
        was none; 409 if that request was a different one."""
        with self.db.session() as session:
            found = {
                job.idempotency_key: job
                for job in session.scalars(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key.in_(keys)))
            }
            if not found:
                return None
            if len(found) != len(keys) or any(job.request_hash != request_hash for job in found.values()):
                first = found.get(keys[0]) or next(iter(found.values()))
                raise Conflict(
                    "This Idempotency-Key was already used for a different request.",
                    code="idempotency_key_reused",
                    details={"job_id": first.id},
                )
            return [self._accepted(session, found[key]) for key in keys]

    def _accepted(self, session: Session, job: Job) -> JobAccepted:
        place = self.queue.queue_position(session, job)
        return JobAccepted(
            id=job.id,
            status=job.status,
            queue_position=place.position if place else None,
            queue_position_capped=bool(place and place.capped),
            urls=job_urls(job.id),
        )

    # -- read --------------------------------------------------------------------------------
    def view(self, session: Session, job: Job) -> JobView:
        # Only the columns a view shows: clients poll this, and loading whole image rows (their metadata JSON) was a
        # third of a GET /jobs/{id} (bench/queue.py).
        columns = (Image.id, Image.seed, Image.review_state)
        outputs = (
            session.execute(select(*columns).where(Image.job_id == job.id).order_by(Image.batch_index)).all()
            if job.status == "succeeded"
            else []
        )
        error = JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None
        place = self.queue.queue_position(session, job)
        if job.status in ("queued", "running", "succeeded") and error and error.code != "canceled":
            # An earlier attempt's error stays visible while a retry is pending, labelled as such.
            error = JobError(code=error.code, message=f"(previous attempt) {error.message}")
        return JobView(
            id=job.id,
            kind=job.kind,
            status=job.status,
            model=job.model_id,
            params=job.params,
            seeds=list(job.seeds),
            priority=job.priority,
            system_priority=job.system_priority,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            queue_position=place.position if place else None,
            queue_position_capped=bool(place and place.capped),
            progress=JobProgress(
                step=job.progress_step, total=job.progress_total, image=job.progress_image, images=len(job.seeds)
            ),
            error=error if job.status != "succeeded" else None,
            cost=job.cost,
            duration_seconds=job.duration_seconds,
            timings=dict(job.timings or {}),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            outputs=[
                JobOutput(image_id=i, seed=seed, url=u.file, thumbnail_url=u.thumbnails["300"], review_state=review)
                for i, seed, review in outputs
                for u in (image_urls(i, review),)
            ],
            blocked_outputs=job.blocked_outputs or 0,
            urls=job_urls(job.id),
        )

    def get(self, owner_id: str, job_id: str) -> JobView:
        with self.db.session() as session:
            return self.view(session, get_owned(session, Job, job_id, owner_id, what="job"))

    def list(self, owner_id: str, *, status: str | None = None, limit: int = 50, cursor: str | None = None) -> JobPage:
        check_status_filter(status)
        with self.db.session() as session:
            stmt = select(Job).where(Job.owner_id == owner_id)
            if status:
                stmt = stmt.where(Job.status == status)
            if cursor:
                stmt = stmt.where(Job.id < cursor)
            rows = session.scalars(stmt.order_by(Job.id.desc()).limit(limit + 1)).all()
            items = [self.view(session, j) for j in rows[:limit]]
        return JobPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    # -- control -----------------------------------------------------------------------------
    def cancel(self, owner_id: str, job_id: str) -> JobView:
        """Cancel a job: a queued one at once, a running one at its next step; a finished one is left as is."""
        with self.db.session() as session:
            job = get_owned(session, Job, job_id, owner_id, what="job", for_update=True)
            event: dict[str, Any] | None = None
            if job.status == "queued":
                job.status = "canceled"
                job.finished_at = utcnow()
                job.error_code, job.error_message = "canceled", "Canceled by its owner."
                event = {"type": "canceled"}
                if self.queue.gate is not None:
                    self.queue.gate.settle(session, {job.id: 0})
            elif job.status == "running" and not job.cancel_requested:
                job.cancel_requested = True
                event = {"type": "cancel_requested"}
            session.flush()
            view = self.view(session, job)
        if event:
            self.events.publish(job_id, event)
        return view

    def retry(self, owner_id: str, job_id: str) -> JobAccepted:
        """Queue the owner's failed or canceled job again (same id, same seeds, fresh attempts)."""
        return self.requeue(lambda session: get_owned(session, Job, job_id, owner_id, what="job", for_update=True))

    def requeue(
        self, load: Callable[[Session], Job], *, audit: Callable[[Session, Job], None] | None = None
    ) -> JobAccepted:
        """Queue a failed or canceled job again. ``load`` fetches the row locked and authorizes the caller (the
        owner's retry, or an administrator's: domain/generation/admin.py); ``audit`` records the retry in the
        same transaction, before the row changes."""
        with self.db.session() as session:
            job = load(session)
            if job.status not in ("failed", "canceled"):
                raise Conflict(
                    f"Only failed or canceled jobs can be retried; this one is {job.status}.",
                    code="job_not_retryable",
                    details={"status": job.status},
                )
            # As at submit: a model that is not installed (or has no files here) is refused now, rather than
            # queued for workers, which take only the jobs of models they have (served.py).
            self.catalog.resolve(job.model_id)
            if audit is not None:
                audit(session, job)
            if self.queue.gate is not None:
                # Charged again (its last charge was released when it failed), under the owner's plan of today.
                row: dict[str, Any] = {
                    "id": job.id,
                    "kind": job.kind,
                    "params": job.params,
                    "model_id": job.model_id,
                    "system_priority": job.system_priority,
                }
                self.queue.gate.reserve(session, job.owner_id, [row], retry=True)
                job.system_priority, job.max_running = row["system_priority"], row["max_running"]
            job.status = "queued"
            job.attempts = 0
            job.cancel_requested = False
            job.error_code = job.error_message = None
            job.run_after = utcnow()
            job.started_at = job.finished_at = None
            job.progress_step = 0
            session.flush()
            accepted = self._accepted(session, job)
            job_id, model_id = job.id, job.model_id
        self.dispatch.notify(job_id, model_id)
        self.events.publish(job_id, queued_event(accepted.queue_position, accepted.queue_position_capped))
        return accepted

    def regenerate(self, owner_id: str, image_id: str, req: RegenerateRequest) -> JobAccepted:
        """A new job with an image's parameters: the same seed (same picture), a new one, or a given one."""
        with self.db.session() as session:
            img = self.gallery.get_row(session, owner_id, image_id)
            job = session.get(Job, img.job_id) if img.job_id else None
            input_keys = dict(job.input_keys or {}) if job else {}
            params = regenerate_params(img, job, req)
            kind: JobKind = img.kind  # type: ignore[assignment]
        init_key, mask_key = input_keys.pop("init", None), input_keys.pop("mask", None)
        try:
            init = Upload(self.store.get(init_key)) if init_key else None
            mask = Upload(self.store.get(mask_key)) if mask_key else None
            # The ControlNet and reference pictures it was made with (issue 19).
            inputs = {name: Upload(self.store.get(key)) for name, key in input_keys.items()}
        except ObjectNotFound as exc:
            raise Conflict(
                "The input image this picture was made from is no longer stored, so it cannot be regenerated.",
                code="input_missing",
            ) from exc
        accepted, _ = self.submit(owner_id, params, kind=kind, init_image=init, mask_image=mask, inputs=inputs)
        return accepted

    # -- usage -------------------------------------------------------------------------------
    def stats(self, owner_id: str, days: int = 30) -> Stats:
        """The owner's totals, and the job durations and per-day series of the last ``days`` UTC days."""
        with self.db.session() as session:
            by_status = dict(
                session.execute(
                    select(Job.status, func.count()).where(Job.owner_id == owner_id).group_by(Job.status)
                ).all()
            )
            total_cost = session.scalar(select(func.coalesce(func.sum(Job.cost), 0.0)).where(Job.owner_id == owner_id))
            counts = self.gallery.stats_counts(session, owner_id)
            per_day = analytics.owner_per_day(session, self.db.is_sqlite, owner_id, days)
            _, since = analytics.window(days)
            durations = analytics.duration_summary(session, self.db.is_sqlite, since, owner_id)
        return Stats(
            jobs={s: int(by_status.get(s, 0)) for s in JOB_STATUS_FILTERS},
            images=counts["images"],
            starred=counts["starred"],
            collections=counts["collections"],
            total_cost=round(float(total_cost or 0.0), 6),
            duration_seconds=durations,
            per_day=per_day,
        )
