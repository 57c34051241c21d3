"""Which models a `studiolo worker` process takes jobs for: the ones it was asked to serve whose files it has.

Model files must be at the same path on every machine (docs/deployment.md, step 5), but a worker cannot rely on
it: a machine provisioned without a model, or one whose files were deleted, would otherwise take that model's
jobs and fail them for everyone. So a worker checks, at start and every ``STUDIOLO_WORKER_REFRESH_SECONDS``,
which models are installed and which of them have their files here, and claims (with Celery: consumes the
queues of) only those. The same refresh picks up models installed after the worker started, so no restart is
needed. A model whose files turn out to be missing when a job runs is dropped at once (``suspend``) and comes
back at the first refresh that finds its files.

Each worker advertises its list in its liveness row (``workers.models``), so the worker that finds a model's
files missing can tell whether another process may still run the job (put it back in the queue) or nobody can
(fail it with ``model_unavailable``). ``NULL`` there means "any model": the in-process workers of
``studiolo serve`` and ``studiolo generate``, which run on the machine whose API accepted the job.

Tests: ``tests/integration/test_served_models.py``, ``tests/e2e/test_worker_models.py``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.domain.generation.catalog import ModelCatalog
from studiolo.domain.generation.models import WorkerRecord

log = logging.getLogger(__name__)

ChangeListener = Callable[[set[str], set[str]], None]


class ServedModels:
    """The models this process claims: ``requested`` (None: every installed model) that have their files here."""

    def __init__(self, catalog: ModelCatalog, requested: Sequence[str] | None = None, *, builtin: Sequence[str] = ()):
        self.catalog = catalog
        # Job "models" this process serves without files, beside the built-in upscalers: the film renderer's
        # pseudo-model where this machine can render films (ffmpeg found; services.py).
        self.builtin = list(builtin)
        self.requested = list(dict.fromkeys(requested)) if requested is not None else None
        self._lock = threading.Lock()
        self._current: list[str] = []
        # Why each wanted model is not served, as last logged: a refresh warns about a change, not every time.
        self._problems: dict[str, str] = {}
        self._listeners: list[ChangeListener] = []

    def current(self) -> list[str]:
        """The model ids to claim jobs for now."""
        with self._lock:
            return list(self._current)

    def serves(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._current

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(added, removed)`` after every change of the list (from the thread that changed it)."""
        self._listeners.append(listener)

    def refresh(self) -> tuple[set[str], set[str]]:
        """Re-read the installed models and check their files; returns (added, removed) model ids."""
        installed = {m.id: m for m in self.catalog.models(fresh=True)}
        builtin = [*self.catalog.builtin_upscaler_ids(), *self.builtin]  # no files: every machine has them
        wanted = self.requested if self.requested is not None else [*sorted(installed), *builtin]
        available: list[str] = []
        problems: dict[str, str] = {}
        for model_id in wanted:
            info = installed.get(model_id)
            if model_id in builtin:
                available.append(model_id)
            elif info is None:
                problems[model_id] = "is not installed"
            elif info.path is not None and not Path(info.path).exists():
                problems[model_id] = f"has no files on this machine (nothing at {info.path})"
            else:
                available.append(model_id)
        with self._lock:
            previous, self._problems = self._problems, problems
        for model_id, problem in problems.items():
            if previous.get(model_id) != problem:
                log.warning(
                    "model %s %s; this worker leaves its jobs to other workers and looks again at every refresh",
                    model_id,
                    problem,
                    extra={"model": model_id},
                )
        for model_id in previous.keys() - problems.keys():
            if model_id in wanted:
                log.warning("model %s is available now: this worker takes its jobs", model_id)
        return self._set(available)

    def keep_fresh(self, stop: threading.Event, seconds: float) -> None:
        """Refresh every ``seconds`` until ``stop`` is set (a worker process's refresh thread)."""
        while not stop.wait(seconds):
            try:
                self.refresh()
            except Exception:  # the database may be briefly away: keep the current list and try again later
                log.exception("refreshing the served models failed")

    def suspend(self, model_id: str, path: str) -> None:
        """Stop claiming ``model_id`` until a refresh finds its files: they vanished while this worker served it."""
        with self._lock:
            if model_id not in self._current:
                return
            current = [m for m in self._current if m != model_id]
            self._problems[model_id] = f"has no files on this machine (nothing at {path})"
        log.warning(
            "model %s has no files on this machine any more (nothing at %s): this worker takes no more of its "
            "jobs until they are back",
            model_id,
            path,
            extra={"model": model_id},
        )
        self._set(current)

    def _set(self, models: list[str]) -> tuple[set[str], set[str]]:
        with self._lock:
            before = set(self._current)
            self._current = list(models)
        added, removed = set(models) - before, before - set(models)
        if added or removed:
            log.info("serving models: %s", ", ".join(models) or "(none)")
            for listener in self._listeners:
                try:
                    listener(added, removed)
                except Exception:  # a broker or database hiccup must not stop the other listeners or the worker
                    log.exception("reacting to a change of the served models failed")
        return added, removed


def served_elsewhere(session: Session, model_id: str, *, worker_id: str, lease_seconds: float) -> bool:
    """True when a live worker of another process than ``worker_id``'s may take jobs for ``model_id``.

    Workers of this process are left out: they share its file system, so they lack the same files."""
    horizon = utcnow() - timedelta(seconds=lease_seconds)
    host, pid = socket.gethostname(), os.getpid()
    rows = session.execute(
        select(WorkerRecord.id, WorkerRecord.hostname, WorkerRecord.pid, WorkerRecord.models).where(
            WorkerRecord.last_seen_at >= horizon, WorkerRecord.id != worker_id
        )
    )
    return any(
        not (hostname == host and worker_pid == pid) and (models is None or model_id in models)
        for _, hostname, worker_pid, models in rows
    )
