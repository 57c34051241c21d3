"""The job queue: the ``jobs`` table, claimed atomically, leased, heartbeated and reaped.

Claiming is a compare-and-set ``UPDATE ... WHERE status='queued'`` on a candidate chosen by the
ordering below, so it is atomic on SQLite and PostgreSQL alike: of two workers racing for one row,
exactly one sees ``rowcount == 1`` (``tests/integration/test_queue.py::test_concurrent_claims``).

Order: priority (high first), then per-user round robin (every user's n-th queued job before anyone's
n+1-th, and among users' next jobs, the user served longest ago first), then jobs for a model the
worker already has loaded, then age.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from studiolo.db.base import UTCDateTime, utcnow
from studiolo.db.session import Database
from studiolo.domain.generation.models import Job, QueueTurn

# How many top candidates one claim attempt tries before re-reading the queue.
_CANDIDATES = 8
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LeaseState:
    """What a heartbeat learns: whether we still own the job, and whether its owner asked to cancel."""

    owned: bool
    cancel_requested: bool


@dataclass(frozen=True)
class ReapedJob:
    id: str
    requeued: bool


class JobQueue:
    def __init__(self, db: Database, *, lease_seconds: float, retry_backoff_seconds: float):
        self.db = db
        self.lease = timedelta(seconds=lease_seconds)
        self.backoff = retry_backoff_seconds

    def _candidates(self, session: Session, now: datetime, loaded_models: Sequence[str]) -> list[str]:
        rank = (
            func.row_number().over(partition_by=Job.owner_id, order_by=(Job.priority.desc(), Job.id)).label("user_rank")
        )
        inner = (
            select(Job.id, Job.owner_id, Job.priority, Job.model_id, rank)
            .where(Job.status == "queued", Job.run_after <= now)
            .subquery()
        )
        turn = func.coalesce(QueueTurn.last_claimed_at, literal(_NEVER, UTCDateTime()))
        affinity = (
            case((inner.c.model_id.in_(list(loaded_models)), literal(0)), else_=literal(1))
            if loaded_models
            else literal(1)
        )
        stmt = (
            select(inner.c.id)
            .outerjoin(QueueTurn, QueueTurn.owner_id == inner.c.owner_id)
            .order_by(inner.c.priority.desc(), inner.c.user_rank, turn, affinity, inner.c.id)
            .limit(_CANDIDATES)
        )
        return list(session.scalars(stmt))

    def claim(self, worker_id: str, loaded_models: Sequence[str] = ()) -> Job | None:
        """Atomically take the next job for ``worker_id`` and lease it; None when nothing is ready."""
        for _ in range(4):
            now = utcnow()
            with self.db.session() as session:
                candidates = self._candidates(session, now, loaded_models)
                if not candidates:
                    return None
                for job_id in candidates:
                    result = session.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.status == "queued")
                        .values(
                            status="running",
                            lease_owner=worker_id,
                            lease_expires_at=now + self.lease,
                            attempts=Job.attempts + 1,
                            started_at=now,
                            progress_step=0,
                        )
                        .execution_options(synchronize_session=False)
                    )
                    if result.rowcount == 1:  # type: ignore[attr-defined]
                        self._take_turn(session, job_id, now)
                        session.commit()
                        job = session.get(Job, job_id, populate_existing=True)
                        assert job is not None
                        return job
            # Every candidate was taken by another worker between our read and write: read again.
        return None

    def _take_turn(self, session: Session, job_id: str, now: datetime) -> None:
        owner_id = session.scalar(select(Job.owner_id).where(Job.id == job_id))
        values = {"owner_id": owner_id, "last_claimed_at": now}
        dialect = session.get_bind().dialect.name
        insert = sqlite_insert if dialect == "sqlite" else pg_insert
        stmt = insert(QueueTurn).values(**values)
        session.execute(stmt.on_conflict_do_update(index_elements=["owner_id"], set_={"last_claimed_at": now}))

    def heartbeat(self, job_id: str, worker_id: str) -> LeaseState:
        """Extend the lease; tells the caller if it lost the job (reaped) or the owner asked to cancel."""
        with self.db.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == "running")
                .values(lease_expires_at=utcnow() + self.lease)
                .execution_options(synchronize_session=False)
            )
            owned = result.rowcount == 1  # type: ignore[attr-defined]
            cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
            return LeaseState(owned=owned, cancel_requested=cancel)

    def set_progress(self, job_id: str, worker_id: str, step: int, total: int) -> None:
        with self.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == "running")
                .values(progress_step=step, progress_total=total)
                .execution_options(synchronize_session=False)
            )

    def retry_later(self, session: Session, job: Job, code: str, message: str) -> None:
        """Put a running job back in the queue with exponential backoff (attempts already counted)."""
        delay = self.backoff * (2 ** max(job.attempts - 1, 0))
        job.status = "queued"
        job.lease_owner = None
        job.lease_expires_at = None
        job.run_after = utcnow() + timedelta(seconds=delay)
        job.error_code = code
        job.error_message = message

    def reap_expired(self) -> list[ReapedJob]:
        """Requeue (or dead-letter) running jobs whose worker stopped heartbeating."""
        reaped: list[ReapedJob] = []
        now = utcnow()
        with self.db.session() as session:
            expired = session.scalars(
                select(Job).where(Job.status == "running", Job.lease_expires_at < now).with_for_update(skip_locked=True)
            ).all()
            for job in expired:
                if job.attempts >= job.max_attempts:
                    job.status = "failed"
                    job.error_code = "worker_lost"
                    job.error_message = (
                        f"The worker running this job stopped responding {job.attempts} times; "
                        "the job was given up. Retry it to try again."
                    )
                    job.finished_at = now
                    job.lease_owner = None
                    job.lease_expires_at = None
                    reaped.append(ReapedJob(job.id, requeued=False))
                else:
                    self.retry_later(session, job, "worker_lost", "The worker running this job stopped responding.")
                    reaped.append(ReapedJob(job.id, requeued=True))
        return reaped

    def queue_position(self, session: Session, job: Job) -> int | None:
        """1-based position among queued jobs by the claim order's first key (priority, then age)."""
        if job.status != "queued":
            return None
        ahead = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.status == "queued",
                (Job.priority > job.priority) | ((Job.priority == job.priority) & (Job.id < job.id)),
            )
        )
        return int(ahead or 0) + 1

    def next_wakeup(self) -> datetime | None:
        """When the earliest delayed (backoff) job becomes runnable, so idle workers sleep exactly that long."""
        with self.db.session() as session:
            return session.scalar(select(func.min(Job.run_after)).where(Job.status == "queued"))
