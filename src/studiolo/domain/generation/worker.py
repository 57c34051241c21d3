"""Workers: claim a job, run its engine with heartbeats, progress and cancel, store the outputs.

A worker is a thread; ``WorkerPool`` (pool.py) runs N of them inside ``studiolo serve`` or ``studiolo worker``
(many processes may share one database). Exactly-once outputs: the final transaction re-checks that this worker
still holds the lease before inserting image rows, and discards its files otherwise (``tests/e2e/test_worker_crash.py``,
``tests/integration/test_queue.py::test_worker_that_lost_its_lease_does_not_store_outputs``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.dispatch.base import JobDispatch
from studiolo.domain.adapters.catalog import AdapterCatalog
from studiolo.domain.adapters.requests import adapter_fields
from studiolo.domain.gallery.service import GalleryService, StoredFiles
from studiolo.domain.generation.catalog import ModelCatalog
from studiolo.domain.generation.events import EventBus
from studiolo.domain.generation.handlers import JobContext, KindHandler, Waiting
from studiolo.domain.generation.job_request import generation_request
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.outputs import Finished, commit_successes
from studiolo.domain.generation.queue import JobQueue
from studiolo.domain.generation.run_state import FinishedRun, RunState, Stop
from studiolo.domain.generation.served import ServedModels, served_elsewhere
from studiolo.domain.generation.upscale_jobs import upscale_request, write_job_outputs
from studiolo.domain.safety.outputs import OutputGuard
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


class JobRunner:
    """Runs claimed jobs to a terminal state (or back to the queue).

    A batch (``run_batch``) runs its jobs one after another and stores the successes in one transaction with one
    insert of all their image rows: for jobs of milliseconds, the per-job commit was most of the cost.
    """

    guard: OutputGuard | None = None  # the output check every image passes before it is stored (issue 17)

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
        handlers: dict[str, KindHandler] | None = None,
        adapters: AdapterCatalog | None = None,
    ):
        self.db = db
        # Job kinds run by a handler rather than one engine call (handlers.py): "film" (issue 16).
        self.handlers: dict[str, KindHandler] = dict(handlers or {})
        self.settings = settings
        self.queue = queue
        self.catalog = catalog
        self.adapters = adapters or AdapterCatalog(db, settings)  # issue 19: LoRAs, ControlNets... (domain/adapters)
        self.engines = engines
        self.gallery = gallery
        self.store = store
        self.events = events
        self.dispatch = dispatch
        self.metrics = WorkerMetrics()
        self._loaded: set[tuple[str, str]] = set()
        self._loaded_lock = threading.Lock()
        self._active: dict[str, RunState] = {}
        self._active_lock = threading.Lock()
        self._beat_thread: threading.Thread | None = None
        self._closed = threading.Event()
        # Seconds per job by model (moving average over this process's recent jobs): how many to claim at once.
        self._pace: dict[str, float] = {}
        self._pace_lock = threading.Lock()

    def batch_size(self, models: Sequence[str] | None) -> int:
        """How many jobs of ``models`` to claim at once: about ``claim_batch_seconds`` of work at the slowest of
        their paces; 1 for any model (None), or when one of them has no pace yet."""
        cap = self.settings.claim_batch_max
        if cap <= 1 or not models:
            return 1
        with self._pace_lock:
            paces = [self._pace.get(m) for m in models]
        if any(p is None for p in paces):
            return 1
        slowest = max(p for p in paces if p is not None)
        return max(1, min(cap, int(self.settings.claim_batch_seconds / max(slowest, 1e-6))))

    def _record_pace(self, model_id: str, seconds: float) -> None:
        with self._pace_lock:
            old = self._pace.get(model_id)
            self._pace[model_id] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def loaded_models(self) -> list[str]:
        with self._loaded_lock:
            return [m for e, m in self._loaded if self.engines[e].is_loaded(m)]

    def run(self, job: Job, worker_id: str, shutdown: threading.Event, served: ServedModels | None = None) -> None:
        """Run ``job``; ``served``: the claiming worker's model list, which drops a model whose files are gone."""
        self.run_batch([job], worker_id, shutdown, served)

    def run_batch(
        self,
        jobs: list[Job],
        worker_id: str,
        shutdown: threading.Event,
        served: ServedModels | None = None,
        on_job: Callable[[str | None], None] | None = None,
    ) -> None:
        """Run claimed ``jobs`` in order and commit their successes together. Every job's lease is heartbeated from
        the start; jobs not started when ``shutdown`` is set go back to the queue uncharged. ``on_job``: told which
        job runs (None at the end)."""
        states = [RunState(job.id, worker_id, images=len(job.seeds)) for job in jobs]
        with self._active_lock:
            for state in states:
                self._active[state.job_id] = state
            if self._beat_thread is None:
                self._beat_thread = threading.Thread(target=self._heartbeat_loop, daemon=True, name="job-heartbeats")
                self._beat_thread.start()
        done: list[FinishedRun] = []
        ran: list[tuple[str, float]] = []  # (model, seconds) of each job run
        try:
            for i, (job, state) in enumerate(zip(jobs, states, strict=True)):
                if shutdown.is_set():
                    for rest, rest_state in zip(jobs[i:], states[i:], strict=True):
                        self._interrupted(rest, rest_state, "shutdown")
                    break
                if on_job is not None:
                    on_job(job.id)
                t = time.monotonic()
                finished = self._run_one(job, state, shutdown, served)
                ran.append((job.model_id, time.monotonic() - t))
                if finished is not None:
                    done.append(finished)
        finally:
            try:
                t = time.monotonic()
                if done:
                    self._commit_outputs(done)
                share = (time.monotonic() - t) / max(len(ran), 1)
                for model_id, seconds in ran:
                    self._record_pace(model_id, seconds + share)
            finally:
                if on_job is not None:
                    on_job(None)
                with self._active_lock:
                    for state in states:
                        self._active.pop(state.job_id, None)

    def _run_one(
        self, job: Job, state: RunState, shutdown: threading.Event, served: ServedModels | None
    ) -> FinishedRun | None:
        # Only cancel requests: a listener taking every event would make previews look wanted.
        unsubscribe = self.events.subscribe(job.id, lambda ev: self._on_event(state, ev), types=("cancel_requested",))
        log_token = bind_job(job.id, state.worker_id)
        try:
            self.events.publish(job.id, {"type": "started", "attempt": job.attempts})
            handler = self.handlers.get(job.kind)
            if handler is not None:
                self._run_handled(handler, job, state, shutdown)
                return None
            return self._run(job, state, shutdown, served)
        finally:
            unbind_job(log_token)
            unsubscribe()

    def _on_event(self, state: RunState, event: dict[str, Any]) -> None:
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

    def _should_stop(self, state: RunState, shutdown: threading.Event) -> bool:
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

    def _on_step(self, state: RunState, step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
        # The engine's own terms (CONTRACTS.md "Progress"): steps of the current call, and which image it makes.
        progress = {"step": step, "total": total, "image": image, "images": state.images}
        self.events.publish(state.job_id, {"type": "progress", **progress})
        state.image = image
        if preview is not None and state.previews.due(step, total):
            self._publish_preview(state, progress, preview)
        now = time.monotonic()
        # The last step needs no write of its own: the success commit sets progress to the total.
        if step < total and now - state.last_progress_write >= _PROGRESS_WRITE_INTERVAL:
            state.last_progress_write = now
            self.queue.set_progress(state.job_id, state.worker_id, step, total, image)

    def _publish_preview(self, state: RunState, progress: dict[str, int], preview: Preview) -> None:
        if not self.settings.previews or not self.events.may_have_listeners(state.job_id, "preview"):
            return
        try:
            image = state.previews.render(preview)
        except Exception:  # a preview is a nicety: the job goes on without previews rather than fail
            state.previews.broken = True
            log.warning("making a preview failed; no more previews for this job", exc_info=True)
            return
        if image is not None:
            self.events.publish(state.job_id, {"type": "preview", **progress, "data_url": image})

    def _request(self, job: Job, model: ModelRef) -> GenerationRequest:
        if job.kind == "upscale":  # its source image is read now, from the gallery (upscale_jobs.py)
            return upscale_request(self.db, self.store, job, model)
        adapters = adapter_fields(
            job.params,
            job.input_keys,
            adapters=self.adapters,
            catalog=self.catalog,
            engines=self.engines,
            store=self.store,
        )
        return generation_request(job, model, self.store, adapters)

    def _run(
        self, job: Job, state: RunState, shutdown: threading.Event, served: ServedModels | None
    ) -> FinishedRun | None:
        """Generate ``job`` and write its files; the outputs waiting for their commit, or None when the job ended
        otherwise (failed, canceled, retried, handed back)."""
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

            def on_step(step: int, total: int, /, preview: Preview | None = None, image: int = 0) -> None:
                self._on_step(state, step, total, preview, image)

            outputs = engine.generate(request, on_step, should_cancel)
            state.timings["generate"] = round(time.monotonic() - t, 4)
            if state.stop_reason and not state.cancel:
                raise Stop(state.stop_reason)
        except GenerationCanceled:
            if state.cancel:
                self._finish(job, state, "canceled", "canceled", "Canceled by its owner.")
            else:
                self._interrupted(job, state, state.stop_reason or "shutdown")
            return None
        except Stop as stop:
            self._interrupted(job, state, stop.reason)
            return None
        except ModelUnavailable as exc:
            if "path" in exc.details:  # installed, but its files are not on this machine
                self._missing_here(job, state, served, exc.details["path"], exc.message)
            else:  # not installed (any more): no worker can run it
                self._finish(job, state, "failed", "model_unavailable", exc.message)
            return None
        except EngineError as exc:
            if isinstance(exc, ModelLoadError) and model and model.path and not Path(model.path).exists():
                self._missing_here(job, state, served, str(model.path), str(exc))  # the files vanished meanwhile
            else:  # damaged files (a ModelLoadError) are the same on every machine: not retried
                self._failed_attempt(job, state, exc.code, str(exc), retryable=exc.retryable)
            return None
        except Exception as exc:
            log.exception("job crashed", extra={"job_id": job.id})
            self._failed_attempt(job, state, "internal_error", f"The generation crashed: {exc}", retryable=True)
            return None
        return self._store(job, state, request, outputs)

    def _run_handled(self, handler: KindHandler, job: Job, state: RunState, shutdown: threading.Event) -> None:
        """Run a job of a handled kind (handlers.py) to its end, or back to the queue when it waits."""

        def timing(phase: str, seconds: float) -> None:
            state.timings[phase] = round(state.timings.get(phase, 0.0) + seconds, 4)

        ctx = JobContext(
            worker_id=state.worker_id,
            should_stop=lambda: self._should_stop(state, shutdown),
            canceled=lambda: state.cancel,
            publish=lambda event: self.events.publish(job.id, event),
            timing=timing,
        )
        try:
            outcome = handler.run(job, ctx)
        except GenerationCanceled:
            if state.cancel:
                self._finish(job, state, "canceled", "canceled", "Canceled by its owner.")
            else:
                self._interrupted(job, state, state.stop_reason or "shutdown")
            return
        except EngineError as exc:
            self._failed_attempt(job, state, exc.code, str(exc), retryable=exc.retryable)
            return
        except Exception as exc:
            log.exception("job crashed", extra={"job_id": job.id})
            self._failed_attempt(job, state, "internal_error", f"The job crashed: {exc}", retryable=True)
            return
        if isinstance(outcome, Waiting):
            self._wait(job, state, outcome)
        else:
            self._finish(job, state, "succeeded", None, None, made=1)

    def _wait(self, job: Job, state: RunState, waiting: Waiting) -> None:
        """Back to the queue for ``waiting.seconds``, keeping the attempt, the lease given up (handlers.Waiting)."""
        with self.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job.id, Job.lease_owner == state.worker_id, Job.status == "running")
                .values(
                    status="queued",
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=Job.attempts - 1,
                    run_after=utcnow() + timedelta(seconds=waiting.seconds),
                    timings={**job.timings, **state.timings},
                )
            )
        self.events.publish(job.id, {"type": "waiting", "reason": waiting.reason, "seconds": waiting.seconds})
        self.dispatch.notify(job.id, job.model_id)

    def _interrupted(self, job: Job, state: RunState, reason: str) -> None:
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
                        progress_image=0,
                    )
                )
            self.dispatch.notify(job.id, job.model_id)
        # lease_lost: another worker owns the job now; leave it alone.

    def _missing_here(self, job: Job, state: RunState, served: ServedModels | None, path: str, message: str) -> None:
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

    def _failed_attempt(self, job: Job, state: RunState, code: str, message: str, *, retryable: bool) -> None:
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

    def _finish(
        self, job: Job, state: RunState, status: str, code: str | None, message: str | None, *, made: int = 0
    ) -> None:
        """End the job; ``made``: what it made (its credits are captured for that, the rest released)."""
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
            if status == "succeeded":  # only a handled kind ends so here (images are committed by outputs.py)
                row.timings = {**(row.timings or {}), **state.timings}
                row.progress_step = row.progress_total
            if self.queue.gate is not None:  # failed or canceled: its credits go back (issue 15)
                self.queue.gate.settle(session, {row.id: made})
        self.metrics.job_ended(job.model_id, status, code, time.monotonic() - state.started)
        handler = self.handlers.get(job.kind)
        if handler is not None and status != "succeeded":
            try:
                handler.ended(job.id, status, code, message)
            except Exception:  # the job's own row is final; what the handler keeps beside it must not undo that
                log.exception("a job handler failed to record the end of its job", extra={"job_id": job.id})
        event: dict[str, Any] = {"type": status}
        if status == "failed":
            event["error"] = {"code": code, "message": message}
        elif status == "succeeded":
            event["image_ids"] = []
        self.events.publish(job.id, event)

    def _store(
        self, job: Job, state: RunState, request: GenerationRequest, outputs: list[GeneratedImage]
    ) -> FinishedRun | None:
        """Write the outputs' files and make their rows (committed by ``_commit_outputs``)."""
        store_started = time.monotonic()
        try:
            written: list[StoredFiles] = []
            rows = write_job_outputs(self.gallery, job, request, outputs, written, self.guard)
            state.timings["store"] = round(time.monotonic() - store_started, 4)
        except Exception as exc:
            self.gallery.discard_files(written)
            log.exception("storing outputs failed", extra={"job_id": job.id})
            self._failed_attempt(job, state, "storage_error", f"Storing the images failed: {exc}", retryable=True)
            return None
        blocked = len(outputs) - len(rows)  # refused by the output check (issue 17)
        return FinishedRun(state, Finished(job, state.worker_id, state.timings, rows, written, state.image, blocked))

    def _commit_outputs(self, done: list[FinishedRun]) -> None:
        """Commit the successes of ``done`` together, then announce them. A batch that cannot be committed is
        committed job by job, so one bad job fails alone."""
        try:
            committed = commit_successes(self.db, self.settings, [f.outputs for f in done], self.queue.gate)
        except Exception as exc:
            if len(done) > 1:
                log.warning("committing %d jobs together failed; committing them one by one", len(done), exc_info=True)
                for finished in done:
                    self._commit_outputs([finished])
                return
            job, state = done[0].job, done[0].state
            self.gallery.discard_files(done[0].outputs.written)
            log.exception("storing outputs failed", extra={"job_id": job.id})
            self._failed_attempt(job, state, "storage_error", f"Storing the images failed: {exc}", retryable=True)
            return
        for finished in done:
            job = finished.job
            if job.id not in committed:
                # We lost the lease while finishing: the job belongs to another worker now.
                self.gallery.discard_files(finished.outputs.written)
                continue
            self.metrics.job_ended(job.model_id, "succeeded", None, time.monotonic() - finished.state.started)
            rows = finished.outputs.rows
            for row in rows:
                self.events.publish(job.id, {"type": "output", "image_id": row["id"], "seed": row["seed"]})
            ids, blocked = [r["id"] for r in rows], finished.outputs.blocked
            self.events.publish(job.id, {"type": "succeeded", "image_ids": ids, "blocked": blocked})


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

    def run_once(
        self,
        shutdown: threading.Event,
        models: list[str] | None = None,
        on_claimed: Callable[[int, int], None] | None = None,
    ) -> bool:
        """Claim and run one job, or a batch of quick ones (for ``models``, else the served models); False when
        nothing was ready. ``on_claimed(claimed, limit)`` is called between the claim and the run."""
        if shutdown.is_set():
            return False  # a worker going away takes nothing new
        if models is None and self.served is not None:
            models = self.served.current()
        limit = self.runner.batch_size(models)
        jobs = self.queue.claim_batch(self.id, limit, self.runner.loaded_models(), models=models)
        self.runner.metrics.claimed(len(jobs))
        if on_claimed is not None:
            on_claimed(len(jobs), limit)
        if not jobs:
            return False
        self.runner.run_batch(jobs, self.id, shutdown, self.served, on_job=self._running)
        return True

    def _running(self, job_id: str | None) -> None:
        self.current_job = job_id

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
