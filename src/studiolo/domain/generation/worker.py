"""Workers: claim a job, run its engine with heartbeats, progress and cancel, store the outputs.

A worker is a thread; ``WorkerPool`` runs N of them inside ``studiolo serve`` or ``studiolo worker``
(many processes may share one database). Exactly-once outputs: the final transaction re-checks that
this worker still holds the lease before inserting image rows, and discards its files otherwise
(``tests/e2e/test_worker_crash.py``,
``tests/integration/test_queue.py::test_worker_that_lost_its_lease_does_not_store_outputs``).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import delete, select, update

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.dispatch.base import JobDispatch
from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.service import GalleryService, StoredFiles, search_text
from studiolo.domain.generation.catalog import ModelCatalog
from studiolo.domain.generation.events import EventBus
from studiolo.domain.generation.models import Job, WorkerRecord
from studiolo.domain.generation.previews import PreviewGate
from studiolo.domain.generation.queue import JobQueue
from studiolo.domain.generation.served import ServedModels, served_elsewhere
from studiolo.engines.base import (
    Engine,
    EngineError,
    GeneratedImage,
    GenerationCanceled,
    GenerationRequest,
    ModelLoadError,
    ModelRef,
    Preview,
)
from studiolo.errors import ModelUnavailable
from studiolo.logs import bind_job, unbind_job
from studiolo.metrics import WorkerMetrics
from studiolo.settings import Settings
from studiolo.storage.base import ObjectStore

log = logging.getLogger(__name__)

# Progress is always published to listeners; the row is written at most this often (plus the last step).
_PROGRESS_WRITE_INTERVAL = 0.25
# A running job's cancel flag in the row is re-read at most this often (in-process cancels are instant).
_CANCEL_POLL_INTERVAL = 0.5


class _Stop(Exception):
    """Why a running generation was interrupted, when it was not the owner's cancel."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # "lease_lost" | "timeout" | "shutdown"


@dataclass
class _RunState:
    job_id: str
    worker_id: str
    started: float = field(default_factory=time.monotonic)
    # Seconds spent per phase (load, generate, store): where a job's time went, shown on the job.
    timings: dict[str, float] = field(default_factory=dict)
    cancel: bool = False
    stop_reason: str | None = None
    last_progress_write: float = 0.0
    last_cancel_poll: float = field(default_factory=time.monotonic)
    previews: PreviewGate = field(default_factory=PreviewGate)


class JobRunner:
    """Runs one claimed job to a terminal state (or back to the queue)."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        queue: JobQueue,
        catalog: ModelCatalog,
        engines: dict[str, Engine],
        gallery: GalleryService,
        store: ObjectStore,
        events: EventBus,
        dispatch: JobDispatch,
    ):
        self.db = db
        self.settings = settings
        self.queue = queue
        self.catalog = catalog
        self.engines = engines
        self.gallery = gallery
        self.store = store
        self.events = events
        self.dispatch = dispatch
        self.metrics = WorkerMetrics()
        self._loaded: set[tuple[str, str]] = set()
        self._loaded_lock = threading.Lock()
        self._active: dict[str, _RunState] = {}
        self._active_lock = threading.Lock()
        self._beat_thread: threading.Thread | None = None
        self._closed = threading.Event()

    def loaded_models(self) -> list[str]:
        with self._loaded_lock:
            return [m for e, m in self._loaded if self.engines[e].is_loaded(m)]

    def run(self, job: Job, worker_id: str, shutdown: threading.Event, served: ServedModels | None = None) -> None:
        """Run ``job``; ``served``: the claiming worker's model list, which drops a model whose files are gone."""
        state = _RunState(job.id, worker_id)
        # Only cancel requests: a listener taking every event would make previews look wanted.
        unsubscribe = self.events.subscribe(job.id, lambda ev: self._on_event(state, ev), types=("cancel_requested",))
        with self._active_lock:
            self._active[job.id] = state
            if self._beat_thread is None:
                self._beat_thread = threading.Thread(target=self._heartbeat_loop, daemon=True, name="job-heartbeats")
                self._beat_thread.start()
        log_token = bind_job(job.id, worker_id)
        try:
            self.events.publish(job.id, {"type": "started", "attempt": job.attempts})
            self._run(job, state, shutdown, served)
        finally:
            unbind_job(log_token)
            with self._active_lock:
                self._active.pop(job.id, None)
            unsubscribe()

    def _on_event(self, state: _RunState, event: dict[str, Any]) -> None:
        if event.get("type") == "cancel_requested":
            state.cancel = True

    def _heartbeat_loop(self) -> None:
        """One thread extends the leases of every job this runner is running (a thread per job cost ~1 ms each)."""
        while not self._closed.wait(self.settings.heartbeat_seconds):
            with self._active_lock:
                running = list(self._active.values())
            for state in running:
                try:
                    lease = self.queue.heartbeat(state.job_id, state.worker_id)
                except Exception:  # a transient DB error must not kill the job; the lease has slack
                    log.warning("heartbeat failed", exc_info=True, extra={"job_id": state.job_id})
                    continue
                if not lease.owned:
                    state.stop_reason = "lease_lost"
                if lease.cancel_requested:
                    state.cancel = True

    def close(self) -> None:
        """Stop the heartbeat thread (call after the workers using this runner have stopped)."""
        self._closed.set()

    def _should_stop(self, state: _RunState, shutdown: threading.Event) -> bool:
        now = time.monotonic()
        if not state.cancel and now - state.last_cancel_poll >= _CANCEL_POLL_INTERVAL:
            state.last_cancel_poll = now
            with self.db.session() as session:
                state.cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == state.job_id)))
        if state.cancel:
            return True
        if now - state.started > self.settings.job_timeout_seconds:
            state.stop_reason = "timeout"
        elif shutdown.is_set():
            state.stop_reason = "shutdown"
        return state.stop_reason is not None

    def _on_step(self, state: _RunState, step: int, total: int, preview: Preview | None = None) -> None:
        self.events.publish(state.job_id, {"type": "progress", "step": step, "total": total})
        if preview is not None and state.previews.due(step, total):
            self._publish_preview(state, step, total, preview)
        now = time.monotonic()
        # The last step needs no write of its own: the success commit sets progress to the total.
        if step < total and now - state.last_progress_write >= _PROGRESS_WRITE_INTERVAL:
            state.last_progress_write = now
            self.queue.set_progress(state.job_id, state.worker_id, step, total)

    def _publish_preview(self, state: _RunState, step: int, total: int, preview: Preview) -> None:
        if not self.settings.previews or not self.events.may_have_listeners(state.job_id, "preview"):
            return
        try:
            image = state.previews.render(preview)
        except Exception:  # a preview is a nicety: the job goes on without previews rather than fail
            state.previews.broken = True
            log.warning("making a preview failed; no more previews for this job", exc_info=True)
            return
        if image is not None:
            self.events.publish(state.job_id, {"type": "preview", "step": step, "total": total, "image": image})

    def _request(self, job: Job, model: ModelRef) -> GenerationRequest:
        p = job.params
        init = mask = None
        # Inputs were validated and normalised to PNG at submit time; only our own files are opened here.
        if "init" in job.input_keys:
            init = PILImage.open(io.BytesIO(self.store.get(job.input_keys["init"]))).convert("RGB")
        if "mask" in job.input_keys:
            mask = PILImage.open(io.BytesIO(self.store.get(job.input_keys["mask"]))).convert("L")
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
        )

    def _run(self, job: Job, state: _RunState, shutdown: threading.Event, served: ServedModels | None) -> None:
        model: ModelRef | None = None
        try:
            model = self.catalog.resolve(job.model_id)
            engine = self.engines[model.engine]
            t = time.monotonic()
            engine.load(model)
            state.timings["load"] = round(time.monotonic() - t, 4)
            with self._loaded_lock:
                self._loaded.add((model.engine, model.id))
            request = self._request(job, model)

            def should_cancel() -> bool:
                return self._should_stop(state, shutdown)

            t = time.monotonic()

            def on_step(step: int, total: int, /, preview: Preview | None = None) -> None:
                self._on_step(state, step, total, preview)

            outputs = engine.generate(request, on_step, should_cancel)
            state.timings["generate"] = round(time.monotonic() - t, 4)
            if state.stop_reason and not state.cancel:
                raise _Stop(state.stop_reason)
        except GenerationCanceled:
            if state.cancel:
                self._finish(job, state, "canceled", "canceled", "Canceled by its owner.")
            else:
                self._interrupted(job, state, state.stop_reason or "shutdown")
            return
        except _Stop as stop:
            self._interrupted(job, state, stop.reason)
            return
        except ModelUnavailable as exc:
            if "path" in exc.details:  # installed, but its files are not on this machine
                self._missing_here(job, state, served, exc.details["path"], exc.message)
            else:  # not installed (any more): no worker can run it
                self._finish(job, state, "failed", "model_unavailable", exc.message)
            return
        except EngineError as exc:
            if isinstance(exc, ModelLoadError) and model and model.path and not Path(model.path).exists():
                self._missing_here(job, state, served, str(model.path), str(exc))  # the files vanished meanwhile
            else:  # damaged files (a ModelLoadError) are the same on every machine: not retried
                self._failed_attempt(job, state, exc.code, str(exc), retryable=exc.retryable)
            return
        except Exception as exc:
            log.exception("job crashed", extra={"job_id": job.id})
            self._failed_attempt(job, state, "internal_error", f"The generation crashed: {exc}", retryable=True)
            return
        self._store(job, state, request, outputs)

    def _interrupted(self, job: Job, state: _RunState, reason: str) -> None:
        if reason == "timeout":
            self._finish(
                job, state, "failed", "timeout", f"The job ran longer than {self.settings.job_timeout_seconds:.0f} s."
            )
        elif reason == "shutdown":
            # Hand the job back without charging an attempt: the worker, not the job, is going away.
            with self.db.session() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.lease_owner == state.worker_id, Job.status == "running")
                    .values(
                        status="queued",
                        lease_owner=None,
                        lease_expires_at=None,
                        attempts=Job.attempts - 1,
                        progress_step=0,  # it starts over: a queued job showing 17/100 would mislead
                    )
                )
            self.dispatch.notify(job.id, job.model_id)
        # lease_lost: another worker owns the job now; leave it alone.

    def _missing_here(self, job: Job, state: _RunState, served: ServedModels | None, path: str, message: str) -> None:
        """The job's model has no files on this machine. The job goes back to the queue while a worker of another
        process may have them (charging the attempt, so it cannot bounce forever), and fails otherwise
        (tests/integration/test_served_models.py)."""
        if served is not None:
            served.suspend(job.model_id, path)  # first, so other processes see this one no longer serves it
        with self.db.session() as session:
            row = session.get(Job, job.id, with_for_update=True)
            if row is None or row.status != "running" or row.lease_owner != state.worker_id:
                return
            elsewhere = served_elsewhere(
                session, job.model_id, worker_id=state.worker_id, lease_seconds=self.settings.lease_seconds
            )
            if row.attempts < row.max_attempts and elsewhere:
                note = f"{message} (on worker {state.worker_id}; another worker will try)"
                self.queue.retry_later(session, row, "model_unavailable", note)
                self.events.publish(job.id, {"type": "retrying", "attempt": row.attempts, "error": "model_unavailable"})
                self.metrics.job_retried(job.model_id, "model_unavailable")
                return
            attempts = row.attempts
        if elsewhere:  # the last attempt
            lead = f"No worker found the files of model '{job.model_id}' in {attempts} attempts."
        else:
            lead = f"No other running worker has the files of model '{job.model_id}'."
        self._finish(job, state, "failed", "model_unavailable", f"{lead} {message}")

    def _failed_attempt(self, job: Job, state: _RunState, code: str, message: str, *, retryable: bool) -> None:
        with self.db.session() as session:
            row = session.get(Job, job.id, with_for_update=True)
            if row is None or row.status != "running" or row.lease_owner != state.worker_id:
                return
            if retryable and row.attempts < row.max_attempts:
                self.queue.retry_later(session, row, code, message)
                self.events.publish(job.id, {"type": "retrying", "attempt": row.attempts, "error": code})
                self.metrics.job_retried(job.model_id, code)
                return
        self._finish(job, state, "failed", code, message)

    def _finish(self, job: Job, state: _RunState, status: str, code: str | None, message: str | None) -> None:
        now = utcnow()
        with self.db.session() as session:
            row = session.get(Job, job.id, with_for_update=True)
            if row is None or row.status != "running" or row.lease_owner != state.worker_id:
                return
            row.status = status
            row.error_code, row.error_message = code, message
            row.finished_at = now
            row.lease_owner = row.lease_expires_at = None
            if row.started_at:
                row.duration_seconds = (now - row.started_at).total_seconds()
        self.metrics.job_ended(job.model_id, status, code, time.monotonic() - state.started)
        event: dict[str, Any] = {"type": status}
        if status == "failed":
            event["error"] = {"code": code, "message": message}
        self.events.publish(job.id, event)

    def _store(self, job: Job, state: _RunState, request: GenerationRequest, outputs: list[GeneratedImage]) -> None:
        p = job.params
        store_started = time.monotonic()
        written: list[StoredFiles] = []
        rows: list[Image] = []
        try:
            for k, out in enumerate(outputs):
                sampler = out.sampler or request.sampler or "default"
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
                    "width": out.image.width,
                    "height": out.image.height,
                    "strength": p["strength"] if job.kind != "txt2img" else None,
                    "generator": "studiolo",
                }
                parameters = imaging.a1111_parameters(
                    prompt=p["final_prompt"],
                    negative_prompt=p["final_negative_prompt"],
                    steps=p["steps"],
                    sampler=imaging.a1111_sampler_name(sampler),
                    cfg_scale=p["guidance"],
                    seed=out.seed,
                    width=out.image.width,
                    height=out.image.height,
                    model=job.model_id,
                )
                png = imaging.encode_png(out.image, parameters=parameters, metadata=meta)
                files = self.gallery.write_files(png, imaging.make_thumbnails(out.image))
                written.append(files)
                rows.append(
                    Image(
                        owner_id=job.owner_id,
                        job_id=job.id,
                        batch_index=k,
                        kind=job.kind,
                        prompt=p["prompt"],
                        negative_prompt=p["negative_prompt"],
                        style=p["style"],
                        model_id=job.model_id,
                        seed=out.seed,
                        steps=p["steps"],
                        guidance=p["guidance"],
                        sampler=sampler,
                        width=out.image.width,
                        height=out.image.height,
                        original_key=files.original_key,
                        thumbnail_keys=files.thumbnail_keys,
                        size_bytes=files.size_bytes,
                        meta=meta,
                        tags=list(p.get("tags") or []),
                        search_text=search_text(p["prompt"], p.get("tags") or []),
                    )
                )
            state.timings["store"] = round(time.monotonic() - store_started, 4)
            committed = self._commit_success(job, state, rows)
        except Exception as exc:
            self.gallery.discard_files(written)
            log.exception("storing outputs failed", extra={"job_id": job.id})
            self._failed_attempt(job, state, "storage_error", f"Storing the images failed: {exc}", retryable=True)
            return
        if not committed:
            # We lost the lease while finishing: the job belongs to another worker now.
            self.gallery.discard_files(written)
            return
        self.metrics.job_ended(job.model_id, "succeeded", None, time.monotonic() - state.started)
        for row in rows:
            self.events.publish(job.id, {"type": "output", "image_id": row.id, "seed": row.seed})
        self.events.publish(job.id, {"type": "succeeded", "image_ids": [r.id for r in rows]})

    def _commit_success(self, job: Job, state: _RunState, rows: list[Image]) -> bool:
        now = utcnow()
        p = job.params
        with self.db.session() as session:
            row = session.get(Job, job.id, with_for_update=True)
            if row is None or row.status != "running" or row.lease_owner != state.worker_id:
                return False
            session.add_all(rows)
            row.status = "succeeded"
            row.finished_at = now
            row.lease_owner = row.lease_expires_at = None
            row.error_code = row.error_message = None
            row.progress_step = row.progress_total = p["steps"]
            row.duration_seconds = (now - row.started_at).total_seconds() if row.started_at else None
            megapixels = p["width"] * p["height"] / 1_000_000
            row.timings = {
                "queue_wait": round((row.started_at - row.created_at).total_seconds(), 4) if row.started_at else None,
                **state.timings,
            }
            row.cost = round(self.settings.cost_per_megapixel_step * megapixels * p["steps"] * len(rows), 6)
        return True


class Worker:
    """One worker thread: claim, run, repeat; sleeps on the dispatch until woken or the next delayed job."""

    def __init__(
        self,
        worker_id: str,
        queue: JobQueue,
        runner: JobRunner,
        dispatch: JobDispatch,
        settings: Settings,
        served: ServedModels | None = None,
    ):
        self.id = worker_id
        self.queue = queue
        self.runner = runner
        self.dispatch = dispatch
        self.settings = settings
        self.served = served  # None: any model (the in-process workers of `serve`)
        self.current_job: str | None = None

    def run_once(self, shutdown: threading.Event, models: list[str] | None = None) -> bool:
        """Claim and run one job (for one of ``models``, else of the served models); False when nothing was ready."""
        if models is None and self.served is not None:
            models = self.served.current()
        job = self.queue.claim(self.id, self.runner.loaded_models(), models=models)
        if job is None:
            return False
        self.current_job = job.id
        try:
            self.runner.run(job, self.id, shutdown, self.served)
        finally:
            self.current_job = None
        return True

    def idle_wait(self) -> float:
        wait = self.settings.worker_poll_seconds
        nxt = self.queue.next_wakeup(self.served.current() if self.served is not None else None)
        if nxt is not None:
            wait = min(wait, max((nxt - utcnow()).total_seconds(), 0.0))
        return max(wait, 0.005)

    def run_forever(self, shutdown: threading.Event) -> None:
        while not shutdown.is_set():
            try:
                if self.run_once(shutdown):
                    continue
                self.dispatch.wait(self.idle_wait())
            except Exception:
                # The database may be briefly unreachable; back off and keep the worker alive.
                log.exception("worker loop error", extra={"worker_id": self.id})
                shutdown.wait(1.0)


class WorkerPool:
    """N worker threads, one housekeeping thread (liveness rows, reaping expired leases) and, with ``served``
    (`studiolo worker`), one that refreshes the served models."""

    def __init__(
        self,
        *,
        db: Database,
        queue: JobQueue,
        runner: JobRunner,
        dispatch: JobDispatch,
        settings: Settings,
        served: ServedModels | None = None,
    ):
        self.db = db
        self.queue = queue
        self.runner = runner
        self.dispatch = dispatch
        self.settings = settings
        self.served = served
        self.shutdown = threading.Event()
        self.workers: list[Worker] = []
        self.threads: list[threading.Thread] = []
        prefix = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._prefix = prefix

    def start(self, count: int, *, claim_loops: bool = True) -> None:
        """``count`` workers; without ``claim_loops`` they only exist (liveness rows, ids for leases) and
        something else drives them (the Celery task, see dispatch/celery_worker.py)."""
        for i in range(count):
            worker = Worker(f"{self._prefix}:{i}", self.queue, self.runner, self.dispatch, self.settings, self.served)
            self.workers.append(worker)
        if self.served is not None:
            self.served.refresh()
            # Advertise a change at once: a worker that finds a model's files missing asks who else serves it.
            self.served.on_change(lambda added, removed: self._beat())
        self._beat()
        for worker in self.workers if claim_loops else ():
            t = threading.Thread(
                target=worker.run_forever, args=(self.shutdown,), name=f"worker-{worker.id}", daemon=True
            )
            t.start()
            self.threads.append(t)
        hk = threading.Thread(target=self._housekeeping, name="worker-housekeeping", daemon=True)
        hk.start()
        self.threads.append(hk)
        if self.served is not None:
            args = (self.shutdown, self.settings.worker_refresh_seconds)
            refresher = threading.Thread(target=self.served.keep_fresh, args=args, name="worker-models", daemon=True)
            refresher.start()
            self.threads.append(refresher)

    def _beat(self) -> None:
        now = utcnow()
        models = self.served.current() if self.served is not None else None
        with self.db.session() as session:
            for w in self.workers:
                rec = session.get(WorkerRecord, w.id)
                if rec is None:
                    rec = WorkerRecord(id=w.id, hostname=socket.gethostname(), pid=os.getpid())
                    session.add(rec)
                rec.last_seen_at = now
                rec.current_job_id = w.current_job
                rec.models = models
            # Forget workers silent for a day: liveness rows are not history.
            session.execute(delete(WorkerRecord).where(WorkerRecord.last_seen_at < now - timedelta(days=1)))

    def _housekeeping(self) -> None:
        interval = min(self.settings.heartbeat_seconds, self.settings.lease_seconds / 4)
        while not self.shutdown.wait(interval):
            try:
                self._beat()
                for reaped in self.queue.reap_expired():
                    log.warning("reaped job with expired lease", extra={"job_id": reaped.id})
                    if reaped.requeued:
                        self.dispatch.notify(reaped.id, reaped.model_id)
            except Exception:
                log.exception("worker housekeeping failed")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; running jobs are handed back to the queue at their next step."""
        self.shutdown.set()
        self.dispatch.close()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self.db.session() as session:
            session.execute(delete(WorkerRecord).where(WorkerRecord.id.in_([w.id for w in self.workers])))
