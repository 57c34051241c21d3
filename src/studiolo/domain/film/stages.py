"""A render's progress by stage (pipeline.py): published on the job's event stream as it goes and kept on the
project, so a page opened or reloaded mid-render shows it too."""

from __future__ import annotations

import time
from typing import Any

from studiolo.db.session import Database
from studiolo.domain.film.models import FilmProject
from studiolo.domain.film.schemas import STAGES
from studiolo.domain.generation.handlers import JobContext


class Stages:
    """The render's progress: published on the job's stream and kept on the project (so a reload shows it)."""

    def __init__(self, db: Database, project_id: str, job_id: str, ctx: JobContext, previous: dict[str, Any]):
        self.db, self.project_id, self.job_id, self.ctx = db, project_id, job_id, ctx
        kept = previous.get("stages", {}) if previous.get("job_id") == job_id else {}
        self.stages: dict[str, dict[str, Any]] = {
            name: dict(kept.get(name) or {"state": "pending", "done": 0, "total": 0}) for name in STAGES
        }
        self.current: str | None = None
        self._last_write = 0.0

    def begin(self, name: str, total: int) -> None:
        """Start stage ``name``. A stage already running in this job (the images stage, begun again each time the
        render comes back from waiting for its images) keeps its start, so its seconds count the whole wait."""
        self.current = name
        entry = self.stages[name]
        if entry.get("state") != "running" or "started" not in entry:
            entry["started"] = time.time()
        entry.update(state="running", done=0, total=total)
        self._emit(name, force=True)

    def step(self, name: str, done: int) -> None:
        self.stages[name]["done"] = done
        self._emit(name)

    def end(self, name: str, state: str = "done") -> None:
        entry = self.stages[name]
        seconds = round(max(0.0, time.time() - float(entry.pop("started", time.time()))), 3)
        entry.update(state=state, done=entry["total"], seconds=seconds)
        self.ctx.timing(name, seconds)
        self._emit(name, force=True)

    def _emit(self, name: str, *, force: bool = False) -> None:
        entry = self.stages[name]
        self.ctx.publish(
            {"type": "stage", "stage": name, "state": entry["state"], "done": entry["done"], "total": entry["total"]}
        )
        now = time.monotonic()
        if force or now - self._last_write >= 1.0:
            self._last_write = now
            self.save()

    def save(self) -> None:
        with self.db.session() as session:
            project = session.get(FilmProject, self.project_id)
            if project is not None and project.render_job_id == self.job_id:
                project.render_state = {"job_id": self.job_id, "stage": self.current, "stages": self.stages}
