"""A process's workers: N worker threads plus the housekeeping they share (liveness rows, reaping the jobs of
workers that stopped renewing their leases, following the models whose files are here, sweeping stored files that
no row refers to, purging images that have been in the Trash for STUDIOLO_TRASH_DAYS)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from sqlalchemy import delete, func, select

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.dispatch.base import JobDispatch
from studiolo.domain.generation.models import WorkerRecord
from studiolo.domain.generation.orphans import OrphanSweeper
from studiolo.domain.generation.queue import JobQueue
from studiolo.domain.generation.served import ServedModels
from studiolo.domain.generation.worker import JobRunner, Worker
from studiolo.settings import Settings

log = logging.getLogger(__name__)


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
        self.sweeper = OrphanSweeper(db, runner.store, grace=timedelta(seconds=settings.orphan_grace_seconds))

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
        if self.settings.orphan_sweep_seconds > 0:
            # A thread of its own: listing a large bucket takes a while, and liveness beats must not wait for it.
            sweeps = threading.Thread(target=self._sweep_files, name="worker-file-sweep", daemon=True)
            sweeps.start()
            self.threads.append(sweeps)
        # Every worker process runs a pool (`studiolo serve`'s inline workers, `studiolo worker` with or without
        # Celery), so the Trash is emptied on time in every deployment; only the sweep leader purges.
        purges = threading.Thread(target=self._purge_trash, name="worker-trash", daemon=True)
        purges.start()
        self.threads.append(purges)
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

    def _sweep_files(self) -> None:
        while not self.shutdown.wait(self.settings.orphan_sweep_seconds):
            try:
                if self._leads_sweeps():
                    self.sweeper.sweep()
            except Exception:
                log.exception("sweeping stored files that no row refers to failed")

    def _purge_trash(self) -> None:
        while not self.shutdown.wait(self.settings.trash_purge_seconds):
            try:
                self.purge_trash_once()
            except Exception:
                log.exception("purging images due from the Trash failed")

    def purge_trash_once(self) -> int:
        """One housekeeping pass over the Trash (when this process leads): returns how many images were purged."""
        if not self._leads_sweeps():
            return 0
        purged = self.runner.gallery.purge_due()
        if purged:
            log.info("purged %d images from the Trash after %d days", purged, self.settings.trash_days)
        if self.queue.gate is not None:  # billing's upkeep rides on the same pass (issue 15)
            self.queue.gate.upkeep()
        return purged

    def _leads_sweeps(self) -> bool:
        """Whether this process sweeps: the one whose worker has the smallest id among those alive, so a fleet of
        workers lists the store once per period, not once per process."""
        alive_since = utcnow() - timedelta(seconds=self.settings.lease_seconds)
        with self.db.session() as session:
            first = session.scalar(select(func.min(WorkerRecord.id)).where(WorkerRecord.last_seen_at >= alive_since))
        return first is None or first in {w.id for w in self.workers}

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; running jobs are handed back to the queue at their next step."""
        self.shutdown.set()
        self.dispatch.close()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self.db.session() as session:
            session.execute(delete(WorkerRecord).where(WorkerRecord.id.in_([w.id for w in self.workers])))
