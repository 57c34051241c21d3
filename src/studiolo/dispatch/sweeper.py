"""The sweeper: re-dispatches job tokens the broker lost.

For every model with ready jobs, compare the jobs waiting in the database with the tokens waiting in the
broker and publish the difference. Only jobs ready for ``grace`` seconds count: during a burst the API processes'
tokens trail their commits, and counting those jobs sent a duplicate token for each (19% of a worker's CPU in
bench/queue.py, plus an empty claim per duplicate). Duplicates are harmless (an extra token finds nothing to
claim) and the count is bounded (only the shortfall is sent), so it is safe to run in every worker process; on
PostgreSQL an advisory lock still lets only one of them sweep at a time.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select, text

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.dispatch.celery import CeleryDispatch
from studiolo.domain.generation.models import Job

log = logging.getLogger(__name__)

SWEEP_LOCK = 7_262_001  # pg advisory lock key (any constant unique to Studiolo)


class Sweeper:
    def __init__(self, db: Database, dispatch: CeleryDispatch, *, grace_seconds: float = 0.0):
        self.db = db
        self.dispatch = dispatch
        self.grace = timedelta(seconds=grace_seconds)
        self.redispatched = 0

    def sweep(self) -> int:
        """Publish the missing tokens; returns how many were sent."""
        sent = 0
        with self.db.session() as session:
            if not self.db.is_sqlite and not session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK}
            ):
                return 0
            ready = session.execute(
                select(Job.model_id, func.count())
                .where(Job.status == "queued", Job.run_after <= utcnow() - self.grace)
                .group_by(Job.model_id)
            ).all()
            for model_id, count in ready:
                # Gated tokens: one waiting token per model is the full complement (each taken token passes on).
                wanted = min(int(count), 1) if self.dispatch.gate is not None else int(count)
                missing = wanted - self.dispatch.pending(model_id)
                for _ in range(max(0, missing)):
                    self.dispatch.send_now(model_id)
                    sent += 1
        if sent:
            log.info("sweeper re-dispatched %d job token(s)", sent)
        self.redispatched += sent
        return sent
