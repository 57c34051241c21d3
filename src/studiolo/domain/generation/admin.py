"""Jobs for administrators: every user's jobs in one list, and retrying any user's failed or canceled job.

The owner-scoped GenerationService stays the only place that knows how a job is shown and requeued; this
module only swaps the owner check for "any job" and writes the audit event.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from studiolo.db.session import Database
from studiolo.domain.accounts import audit
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import User
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.schemas import AdminJobPage, AdminJobView, JobAccepted
from studiolo.domain.generation.service import GenerationService
from studiolo.domain.generation.submission import check_status_filter
from studiolo.errors import NotFound


class JobAdminService:
    def __init__(self, db: Database, generation: GenerationService):
        self.db = db
        self.generation = generation

    def list(
        self,
        *,
        status: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AdminJobPage:
        """Every user's jobs, newest first, keyset-paginated on the (time-ordered) id."""
        check_status_filter(status)
        with self.db.session() as session:
            stmt = select(Job, User.email).join(User, User.id == Job.owner_id)
            if status:
                stmt = stmt.where(Job.status == status)
            if user_id is not None:
                stmt = stmt.where(Job.owner_id == user_id)
            if model is not None:
                stmt = stmt.where(Job.model_id == model)
            if cursor:
                stmt = stmt.where(Job.id < cursor)
            rows = session.execute(stmt.order_by(Job.id.desc()).limit(limit + 1)).all()
            items = [
                AdminJobView(**dict(self.generation.view(session, job)), owner_id=job.owner_id, owner_email=email)
                for job, email in rows[:limit]
            ]
        return AdminJobPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    def retry(self, actor_id: str, job_id: str, origin: Origin) -> JobAccepted:
        """Queue any user's failed or canceled job again, exactly as its owner's retry would; audited."""

        def load(session: Session) -> Job:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise NotFound(f"No job with id '{job_id}'.", code="job_not_found")
            return job

        def record(session: Session, job: Job) -> None:
            audit.record(
                session,
                "job_retried",
                actor_id=actor_id,
                origin=origin,
                target_id=job.owner_id,
                job_id=job.id,
                previous=job.status,
            )

        return self.generation.requeue(load, audit=record)
