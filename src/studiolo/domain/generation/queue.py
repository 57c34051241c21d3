"""The job queue: the ``jobs`` table, claimed atomically, leased, heartbeated and reaped.

Claiming is a compare-and-set ``UPDATE ... WHERE status='queued' RETURNING`` on a candidate chosen
by the ordering below, so it is atomic on SQLite and PostgreSQL alike: of two workers racing for one
row, exactly one gets it back. On PostgreSQL the candidate is first locked ``FOR UPDATE SKIP LOCKED``, so a
worker passes over a row another worker is claiming instead of waiting for it and then losing the race
(``tests/integration/test_queue.py::test_concurrent_claims_take_each_job_exactly_once``).

Order: each user's next job is their ready job with the highest system priority, then the highest priority of
their own, then the oldest; among those, system priority (high first), then round robin (the user served longest ago
first), then a model the worker already has loaded, then age. ``system_priority`` is set only by administrators;
``priority`` is the owner's and only reorders their own jobs: it never moves them ahead of another user's turn
(``tests/integration/test_queue_priority.py``).

``claim_batch`` takes several jobs in one transaction for workers whose jobs take milliseconds (a no-op or a
tiny model), where claiming one row per transaction cost more than the job itself (bench/queue.py). On
PostgreSQL it is one candidates query (each user's next ``limit`` jobs, through a LATERAL seek per user) and one
``UPDATE ... WHERE id IN (... FOR UPDATE SKIP LOCKED) RETURNING``; the batch keeps the turn order: every user's
first job, then every user's second, and so on.

A job's ``max_running`` (its owner's plan: issue 15; 0 = no limit) holds it back while its owner already has that
many jobs running: the candidates leave out such a user's jobs (one count of their running jobs on
ix_jobs_owner_queue, made only for a job with a limit), and a batch takes no more of a user's jobs than their room.
Two workers claiming one user's jobs at once could each see the last free place, so the count is made again where
the claim is decided: in the claiming UPDATE on SQLite (whose writes take turns), and after a transaction-scoped
advisory lock on the owner on PostgreSQL (tests/integration/test_queue_max_running.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, any_, bindparam, case, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from studiolo.db.base import UTCDateTime, utcnow
from studiolo.db.session import Database
from studiolo.domain.generation.charges import ChargeGate
from studiolo.domain.generation.models import JOBS, QUEUE_TURNS, Job

# How many top candidates one claim attempt tries before re-reading the queue.
_CANDIDATES = 8
# A batch claim reads this many batches' worth of candidates (at most _BATCH_READ_MAX), see claim_batch.
_BATCH_READ_AHEAD = 4
_BATCH_READ_MAX = 1024
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)
# PostgreSQL: pg_advisory_xact_lock(_OWNER_CLAIM_LOCK, hashtext(owner_id)) serialises the claims of one owner's
# limited jobs (the two-key space, apart from the one-key locks of dispatch/sweeper.py and the migrations).
_OWNER_CLAIM_LOCK = 7_262_003


def _has_room(job: Any) -> ColumnElement[bool]:
    """``job`` (a jobs table or alias) may start now: it has no limit, or its owner runs fewer jobs than its limit.
    The count (a range on ix_jobs_owner_queue) is in the CASE's ELSE, so a job without a limit never pays for it."""
    running = JOBS.alias("running")
    count = (
        select(func.count())
        .where(running.c.status == "running", running.c.owner_id == job.c.owner_id)
        .correlate(job)
        .scalar_subquery()
    )
    return case((job.c.max_running == 0, literal(True)), else_=count < job.c.max_running)


def _count_up_to(*where: ColumnElement[bool]) -> Select[int]:
    """How many queued jobs match ``where``, counting no further than ``:cap``: an index range count reads every
    row it counts (fresh rows have no visibility-map bit), so an uncapped count made each submit and each poll
    of a queued job cost O(queue length): ~0.6 ms of PostgreSQL per count with 3,000 jobs queued (measured), some
    20 ms at 100,000 (extrapolated)."""
    matching = select(literal(1)).where(JOBS.c.status == "queued", *where).limit(bindparam("cap")).subquery()
    return select(func.count()).select_from(matching)


# What is ahead of a queued job: every job with a higher system priority, other users' jobs with the same one queued
# before it, and the owner's own jobs that their priority (then age) puts first. Sums of capped counts, so a count
# that reaches the cap makes the position read as capped. The first is a range on ix_jobs_claim (status,
# system_priority, id, owner_id); the owner's own are ranges on ix_jobs_owner_queue, and those of higher priority
# empty unless the owner uses priorities.
_COUNT_ABOVE = _count_up_to(JOBS.c.system_priority > bindparam("system_priority"))
# Other users' jobs: the same range on ix_jobs_claim (which holds owner_id), passing over the owner's own entries in
# it (an owner with a long queue pays for that on their own positions; nobody else's count reads more than the cap).
_OTHERS_SAME = (JOBS.c.system_priority == bindparam("system_priority"), JOBS.c.owner_id != bindparam("owner_id"))
_OWN_SAME = (JOBS.c.owner_id == bindparam("owner_id"), JOBS.c.system_priority == bindparam("system_priority"))
_OWN_EQUAL = (*_OWN_SAME, JOBS.c.priority == bindparam("priority"))
_COUNT_OWN_HIGHER = _count_up_to(*_OWN_SAME, JOBS.c.priority > bindparam("priority"))


def _sum(*counts: Select[int]) -> Select[int]:
    """The counts added up in one statement: one round trip instead of one per count (each stops at ``:cap``)."""
    total: ColumnElement[int] = counts[0].scalar_subquery()
    for count in counts[1:]:
        total = total + count.scalar_subquery()
    return select(total)


# Ahead of a queued job (queue_position), and of one newer than every queued job (positions_of_new).
_AHEAD_OF_JOB = _sum(
    _COUNT_ABOVE,
    _COUNT_OWN_HIGHER,
    _count_up_to(*_OWN_EQUAL, JOBS.c.id < bindparam("id")),
    _count_up_to(*_OTHERS_SAME, JOBS.c.id < bindparam("id")),
)
_AHEAD_OF_NEWEST = _sum(_COUNT_ABOVE, _COUNT_OWN_HIGHER, _count_up_to(*_OWN_EQUAL), _count_up_to(*_OTHERS_SAME))


@dataclass(frozen=True)
class QueuePosition:
    """A queued job's 1-based place: exact up to ``limit``; a job further back reads ``limit``, ``capped``."""

    position: int
    capped: bool = False

    @classmethod
    def of(cls, position: int, limit: int) -> QueuePosition:
        return cls(limit, True) if position > limit else cls(position)


@dataclass(frozen=True)
class LeaseState:
    """What a heartbeat learns: whether we still own the job, and whether its owner asked to cancel."""

    owned: bool
    cancel_requested: bool


@dataclass(frozen=True)
class ReapedJob:
    id: str
    requeued: bool
    model_id: str = ""


def _build_candidates_query(*, model_filter: bool = False) -> Select[tuple[str, str, int]]:
    """Each user's next ready job, best first. Cost grows with the number of users waiting, not jobs.

    The distinct owners with queued jobs are enumerated by a recursive "loose index scan" (one index
    seek per owner on ``ix_jobs_owner_queue``), and each owner's head job is one more seek on the same
    index (system_priority DESC, priority DESC, id), so a user who floods the queue with 100k jobs neither slows
    claims down nor delays anyone else's turn. Built once with bind parameters: compiling it per claim cost more than
    running it. Parameters: ``now``, ``loaded`` (model ids; expanding), ``never``, ``limit``; with
    ``model_filter`` also ``models`` (expanding): only jobs for those models (a worker serving some models'
    queues), each owner's head being their best job among those models. The owner's ``priority`` only chooses their
    head: the heads are ordered by system priority, then turn, so it cannot buy anyone an earlier turn.
    """
    jobs = JOBS
    nxt = jobs.alias("nxt")
    head_job = jobs.alias("head_job")
    owners = (
        select(func.min(jobs.c.owner_id).label("owner_id"))
        .where(jobs.c.status == "queued")
        .cte("owners", recursive=True)
    )
    owners = owners.union_all(
        select(
            select(func.min(nxt.c.owner_id))
            .where(nxt.c.status == "queued", nxt.c.owner_id > owners.c.owner_id)
            .scalar_subquery()
        ).where(owners.c.owner_id.is_not(None))
    )
    conditions = [
        head_job.c.status == "queued",
        head_job.c.owner_id == owners.c.owner_id,
        head_job.c.run_after <= bindparam("now", type_=UTCDateTime()),
    ]
    if model_filter:
        conditions.append(head_job.c.model_id.in_(bindparam("models", expanding=True)))
    head = (
        select(head_job.c.id)
        .where(*conditions)
        .order_by(head_job.c.system_priority.desc(), head_job.c.priority.desc(), head_job.c.id)
        .limit(1)
        .scalar_subquery()
    )
    heads = select(head.label("job_id")).where(owners.c.owner_id.is_not(None)).subquery("heads")
    turns = QUEUE_TURNS
    turn = func.coalesce(turns.c.last_claimed_at, bindparam("never", type_=UTCDateTime()))
    affinity = case((jobs.c.model_id.in_(bindparam("loaded", expanding=True)), literal(0)), else_=literal(1))
    return (
        select(jobs.c.id, jobs.c.owner_id, jobs.c.max_running)
        .join(heads, jobs.c.id == heads.c.job_id)
        .outerjoin(turns, turns.c.owner_id == jobs.c.owner_id)
        # A head whose owner has no room left is passed over (only their head: their other jobs wait behind it).
        .where(_has_room(jobs))
        .order_by(jobs.c.system_priority.desc(), turn, affinity, jobs.c.id)
        .limit(bindparam("limit"))
    )


_CANDIDATES_QUERY = _build_candidates_query()
_CANDIDATES_FOR_MODELS = _build_candidates_query(model_filter=True)
# PostgreSQL: lock one still-queued candidate, skipping rows another worker's claim holds, so concurrent
# claimers spread over the candidates instead of all racing for the first one.
_LOCK = (
    select(JOBS.c.id)
    .where(JOBS.c.id == bindparam("job_id"), JOBS.c.status == "queued")
    .with_for_update(skip_locked=True)
)
# The room is counted again here: on SQLite this UPDATE is where two claimers take turns; on PostgreSQL it runs after
# the owner's advisory lock, in a statement that sees every claim committed before.
_CLAIM = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"), JOBS.c.status == "queued", _has_room(JOBS))
    .values(
        status="running",
        lease_owner=bindparam("worker_id"),
        lease_expires_at=bindparam("expires", type_=UTCDateTime()),
        attempts=JOBS.c.attempts + 1,
        started_at=bindparam("now", type_=UTCDateTime()),
        progress_step=0,
        progress_image=0,
    )
    .returning(JOBS.c.owner_id)
)


# PostgreSQL batch candidates: the owners walk of _build_candidates_query, then each owner's next ``limit`` ready
# jobs (a LATERAL seek on ix_jobs_owner_queue, in the owner's own priority order), in turn order: rank k of every
# owner before rank k+1 of any, so an owner's own priority never wins them a second job before another's first.
# A job with a limit (max_running > 0) is left out past its owner's room: its place ``nth`` in the owner's order
# beyond the limit less the owner's running jobs, counted once per owner that has such a job (``running``).
# Rows: id, owner_id, max_running. Parameters: now, never, limit, loaded, models (arrays; models NULL: any model).
_BATCH_CANDIDATES_PG = text(
    """
    WITH RECURSIVE owners(owner_id) AS (
        SELECT min(owner_id) FROM jobs WHERE status = 'queued'
        UNION ALL
        SELECT (SELECT min(j.owner_id) FROM jobs j WHERE j.status = 'queued' AND j.owner_id > o.owner_id)
        FROM owners o WHERE o.owner_id IS NOT NULL
    ),
    picked AS (
        SELECT h.id, h.owner_id, h.system_priority, h.model_id, h.max_running,
               row_number() OVER (PARTITION BY h.owner_id, h.system_priority ORDER BY h.priority DESC, h.id) AS rank,
               row_number() OVER (PARTITION BY h.owner_id
                                  ORDER BY h.system_priority DESC, h.priority DESC, h.id) AS nth
        FROM owners o
        CROSS JOIN LATERAL (
            SELECT j.id, j.owner_id, j.system_priority, j.priority, j.model_id, j.max_running FROM jobs j
            WHERE j.status = 'queued' AND j.owner_id = o.owner_id AND j.run_after <= :now
              AND (CAST(:models AS text[]) IS NULL OR j.model_id = ANY(CAST(:models AS text[])))
            ORDER BY j.system_priority DESC, j.priority DESC, j.id
            LIMIT :limit
        ) h
        WHERE o.owner_id IS NOT NULL
    ),
    running AS (
        SELECT l.owner_id,
               (SELECT count(*) FROM jobs r WHERE r.status = 'running' AND r.owner_id = l.owner_id) AS jobs
        FROM (SELECT DISTINCT owner_id FROM picked WHERE max_running > 0) l
    )
    SELECT p.id, p.owner_id, p.max_running FROM picked p
    LEFT JOIN running r ON r.owner_id = p.owner_id
    LEFT JOIN queue_turns t ON t.owner_id = p.owner_id
    WHERE p.max_running = 0 OR p.nth <= p.max_running - r.jobs
    ORDER BY p.system_priority DESC, p.rank, coalesce(t.last_claimed_at, :never),
             CASE WHEN p.model_id = ANY(CAST(:loaded AS text[])) THEN 0 ELSE 1 END, p.id
    LIMIT :limit
    """
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("never", type_=UTCDateTime()))
_LOCK_OWNER_PG = text("SELECT pg_advisory_xact_lock(:key, hashtext(:owner_id))")
# The owners' locks in one round trip, taken in the order of the (sorted) array: a function scan emits its rows, and
# the projection takes each lock, in array order, so two batches never wait on each other crosswise.
_LOCK_OWNERS_PG = text("SELECT pg_advisory_xact_lock(:key, hashtext(o)) FROM unnest(CAST(:owners AS text[])) AS o")
_RUNNING_OF_PG = text(
    "SELECT owner_id, count(*) FROM jobs WHERE status = 'running' AND owner_id = ANY(CAST(:owners AS text[])) "
    "GROUP BY owner_id"
)


def _within_room(candidates: Sequence[Any], running: dict[str, int]) -> list[str]:
    """The candidates' ids (rows of id, owner_id, max_running, in claim order) less each limited job beyond its
    owner's room: its limit less the owner's ``running`` jobs less the owner's jobs already kept before it."""
    kept: list[str] = []
    taken: Counter[str] = Counter()
    for job_id, owner_id, max_running in candidates:
        if max_running and running.get(owner_id, 0) + taken[owner_id] >= max_running:
            continue
        taken[owner_id] += 1
        kept.append(job_id)
    return kept


class JobQueue:
    def __init__(self, db: Database, *, lease_seconds: float, retry_backoff_seconds: float, position_limit: int = 1000):
        self.db = db
        # What a job may cost and when its charge ends (issue 15): the billing service, or None when billing is off.
        # On the queue because every path that queues or ends a job has the queue at hand.
        self.gate: ChargeGate | None = None
        self.position_limit = position_limit  # queue positions are counted exactly this far (QueuePosition)
        self.lease = timedelta(seconds=lease_seconds)
        self.backoff = retry_backoff_seconds
        turns = QUEUE_TURNS
        ins = sqlite_insert(turns) if db.is_sqlite else pg_insert(turns)
        self._take_turn = ins.on_conflict_do_update(
            index_elements=["owner_id"], set_={"last_claimed_at": ins.excluded.last_claimed_at}
        )

    def claim(
        self, worker_id: str, loaded_models: Sequence[str] = (), models: Sequence[str] | None = None
    ) -> Job | None:
        """Atomically take the next job for ``worker_id`` and lease it; None when nothing is ready.

        ``models``: only jobs for these models (None: any)."""
        query = _CANDIDATES_QUERY if models is None else _CANDIDATES_FOR_MODELS
        # Losing a race only means another worker made progress; re-read until we win or the queue is empty.
        for _ in range(64):
            now = utcnow()
            params: dict[str, Any] = {
                "now": now,
                "never": _NEVER,
                "loaded": list(loaded_models) or [""],
                "limit": _CANDIDATES,
            }
            if models is not None:
                params["models"] = list(models) or [""]
            with self.db.session(relaxed=True) as session:
                conn = session.connection()
                candidates: Sequence[Any] = conn.execute(query, params).all()
                if not candidates:
                    return None
                for job_id, candidate_owner, max_running in candidates:
                    if not self.db.is_sqlite:
                        if conn.scalar(_LOCK, {"job_id": job_id}) is None:
                            continue  # another worker holds it (or just took it): the next candidate, no waiting
                        if max_running:  # its owner's room is decided by one claimer at a time (_CLAIM counts)
                            conn.execute(_LOCK_OWNER_PG, {"key": _OWNER_CLAIM_LOCK, "owner_id": candidate_owner})
                    owner_id = conn.scalar(
                        _CLAIM, {"job_id": job_id, "worker_id": worker_id, "expires": now + self.lease, "now": now}
                    )
                    if owner_id is not None:
                        conn.execute(self._take_turn, {"owner_id": owner_id, "last_claimed_at": now})
                        session.commit()
                        job = session.get(Job, job_id, populate_existing=True)
                        assert job is not None
                        return job
        return None

    def claim_batch(
        self, worker_id: str, limit: int, loaded_models: Sequence[str] = (), models: Sequence[str] | None = None
    ) -> list[Job]:
        """Take up to ``limit`` ready jobs for ``worker_id`` at once, in claim order; [] when nothing is ready."""
        if limit <= 1 or self.db.is_sqlite:
            # SQLite claims in-process (no round trips to save) and has no LATERAL: one job at a time.
            jobs: list[Job] = []
            while len(jobs) < max(limit, 1) and (job := self.claim(worker_id, loaded_models, models)) is not None:
                jobs.append(job)
            return jobs
        # As in ``claim``: losing every candidate to other workers means they made progress; read again.
        for _ in range(64):
            now = utcnow()
            params: dict[str, Any] = {
                "now": now,
                "never": _NEVER,
                # Workers claiming at once read the same candidates. Reading a few batches' worth lets each lock
                # the first ``limit`` that no other holds instead of finding all of its batch taken and reading
                # again, which 4 concurrent workers did several times per batch (bench/queue.py).
                "limit": min(limit * _BATCH_READ_AHEAD, _BATCH_READ_MAX),
                "loaded": list(loaded_models),
                "models": list(models) if models is not None else None,
            }
            with self.db.session(relaxed=True) as session:
                conn = session.connection()
                rows = conn.execute(_BATCH_CANDIDATES_PG, params).all()
                if not rows:
                    return []
                ids = [row[0] for row in rows]
                limited = sorted({owner_id for _, owner_id, max_running in rows if max_running})
                if limited:
                    # Their room again, counted after taking their owners' locks (in one order: no deadlock), so a
                    # worker claiming beside this one cannot fill the same places.
                    conn.execute(_LOCK_OWNERS_PG, {"key": _OWNER_CLAIM_LOCK, "owners": limited}).all()
                    running = {str(o): int(n) for o, n in conn.execute(_RUNNING_OF_PG, {"owners": limited})}
                    ids = _within_room(rows, running)
                    if not ids:
                        continue
                # The best ``limit`` candidates no other worker is claiming right now (skipped, not waited for).
                candidates = bindparam("candidates", ids, type_=ARRAY(String()))
                lockable = (
                    select(Job.id)
                    .where(Job.id == any_(candidates), Job.status == "queued")
                    .order_by(func.array_position(candidates, Job.id))
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
                claimed = session.scalars(
                    update(Job)
                    .where(Job.id.in_(lockable.scalar_subquery()))
                    .values(
                        status="running",
                        lease_owner=worker_id,
                        lease_expires_at=now + self.lease,
                        attempts=Job.attempts + 1,
                        started_at=now,
                        progress_step=0,
                        progress_image=0,
                    )
                    .returning(Job)
                    .execution_options(synchronize_session=False)
                ).all()
                order = {job_id: i for i, job_id in enumerate(ids)}
                claimed = sorted(claimed, key=lambda job: order[job.id])
                # Each owner's turn is stamped in the order of their last job in the batch: stamped alike, the owners
                # would tie in the next claim, which then served whoever had the oldest job (the same user as
                # before), so batches of 3 ran A's and B's jobs as ABA ABA BB instead of taking turns
                # (tests/integration/test_queue_priority.py::test_batches_keep_the_users_turns).
                last = {job.owner_id: i for i, job in enumerate(claimed)}
                turn_order = sorted(last, key=lambda owner: last[owner])
                stamps = {owner: now + timedelta(microseconds=k) for k, owner in enumerate(turn_order)}
                for owner_id in sorted(last):  # locks in one order across workers
                    session.execute(self._take_turn, {"owner_id": owner_id, "last_claimed_at": stamps[owner_id]})
            if claimed:
                return claimed
        return []

    def heartbeat(self, job_id: str, worker_id: str) -> LeaseState:
        """Extend the lease; tells the caller if it lost the job (reaped) or the owner asked to cancel."""
        with self.db.session(relaxed=True) as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == "running")
                .values(lease_expires_at=utcnow() + self.lease)
                .execution_options(synchronize_session=False)
            )
            owned = result.rowcount == 1  # type: ignore[attr-defined]
            cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
            return LeaseState(owned=owned, cancel_requested=cancel)

    def set_progress(self, job_id: str, worker_id: str, step: int, total: int, image: int = 0) -> None:
        with self.db.session(relaxed=True) as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == "running")
                .values(progress_step=step, progress_total=total, progress_image=image)
                .execution_options(synchronize_session=False)
            )

    def retry_later(self, session: Session, job: Job, code: str, message: str) -> None:
        """Put a running job back in the queue with exponential backoff (attempts already counted)."""
        delay = self.backoff * (2 ** max(job.attempts - 1, 0))
        job.status = "queued"
        job.lease_owner = None
        job.lease_expires_at = None
        job.run_after = utcnow() + timedelta(seconds=delay)
        job.progress_step = job.progress_image = 0  # the next attempt starts over
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
                    reaped.append(ReapedJob(job.id, requeued=False, model_id=job.model_id))
                else:
                    self.retry_later(session, job, "worker_lost", "The worker running this job stopped responding.")
                    reaped.append(ReapedJob(job.id, requeued=True, model_id=job.model_id))
            dead = {r.id: 0 for r in reaped if not r.requeued}
            if dead and self.gate is not None:
                # The dead letters' credits go back; a requeued job keeps its hold (charged once). One call, so the
                # accounts are locked in the one order every settlement uses (no deadlock with a worker's commit).
                self.gate.settle(session, dead)
        return reaped

    def queue_position(self, session: Session, job: Job) -> QueuePosition | None:
        """Place among queued jobs (an estimate: turns are not simulated); None unless queued.

        Ahead of it: every job with a higher system priority, other users' jobs with the same one queued before it,
        and the owner's own jobs that their priority (then age) puts first. Counts at most ``position_limit``."""
        if job.status != "queued":
            return None
        ahead = self._ahead(session, job.owner_id, job.system_priority, job.priority, job.id, self.position_limit)
        return QueuePosition.of(ahead + 1, self.position_limit)

    def _ahead(
        self, session: Session, owner_id: str, system_priority: int, priority: int, job_id: str | None, cap: int
    ) -> int:
        """How many queued jobs are ahead of this one (see queue_position), each of the four kinds counted no further
        than ``cap``; ``job_id`` None: of a job newer than all, which counts every job of its owner that ranks with
        it."""
        params = {"owner_id": owner_id, "system_priority": system_priority, "priority": priority, "cap": cap}
        if job_id is None:
            return int(session.connection().scalar(_AHEAD_OF_NEWEST, params) or 0)
        return int(session.connection().scalar(_AHEAD_OF_JOB, {**params, "id": job_id}) or 0)

    def positions_of_new(self, session: Session, owner_id: str, jobs: Sequence[tuple[int, int]]) -> list[QueuePosition]:
        """Positions of ``owner_id``'s jobs just inserted in this order, each given as (system priority, priority): a
        submit, or a batch's items.

        They are the newest jobs: each is behind all other users' jobs at its system priority, and behind the
        batch's earlier items that rank with it. One count per distinct pair, not one per job."""
        # Counting one past the limit plus the batch tells every item whether it lies beyond the limit.
        cap = self.position_limit + len(jobs) + 1
        # Ahead of a job newer than all the batch: the batch's items that rank with it count too, taken off below.
        ahead = {pair: self._ahead(session, owner_id, pair[0], pair[1], None, cap) for pair in set(jobs)}
        later: Counter[tuple[int, int]] = Counter()  # the batch's later items, per pair
        positions = [QueuePosition(0)] * len(jobs)
        for i in reversed(range(len(jobs))):
            # Itself and the later items of the same pair were counted among the equal, older ones.
            positions[i] = QueuePosition.of(ahead[jobs[i]] - later[jobs[i]], self.position_limit)
            later[jobs[i]] += 1
        return positions

    def next_wakeup(self, models: Sequence[str] | None = None) -> datetime | None:
        """When the earliest delayed (backoff) job becomes runnable, so idle workers sleep exactly that long.

        Only jobs not ready yet (and of ``models``, if given): a ready job the worker could not claim (it serves
        another model) must not wake it again at once."""
        query = select(func.min(Job.run_after)).where(Job.status == "queued", Job.run_after > utcnow())
        if models is not None:
            query = query.where(Job.model_id.in_(list(models) or [""]))
        with self.db.session() as session:
            return session.scalar(query)
