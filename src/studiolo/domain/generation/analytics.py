"""Usage over time: the per-day series of a user's ``/stats`` and the administrators' analytics.

A job counts on the UTC day it was submitted (``created_at``), an image on the day it was made; days are
grouped in SQL on both dialects.

Job durations have ONE definition, used by the user's ``/stats`` (the dashboard) and the admin analytics alike
(``duration_percentiles``): the ``duration_seconds`` (finished - started: run time, not queue wait; set by the
worker, the figure JobView shows) of the succeeded jobs submitted in the window (``created_at`` on or after its
first UTC day). Percentiles are PostgreSQL's ``percentile_cont`` (linear interpolation between the two nearest
values: numpy's default, ``statistics.quantiles(method="inclusive")``) computed in SQL there, and by the same
formula in Python on SQLite, which has no ordered-set aggregates. The dashboard once took every job ever and
rounded to the nearest index instead, so the two pages showed different p95s for the same jobs
(tests/integration/test_job_durations.py checks both against ``statistics.quantiles`` on each database).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, Select, cast, desc, distinct, func, literal_column, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts.models import User
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.schemas import (
    AdminAnalytics,
    AnalyticsDay,
    AnalyticsTotals,
    NameCount,
    StatsDay,
)

TOP = 8
_QUANTILES = (0.5, 0.95)
Percentiles = tuple[float | None, float | None]


def window(days: int, now: datetime | None = None) -> tuple[list[date], datetime]:
    """The last ``days`` UTC days (today included), oldest first, and the instant the first one starts."""
    today = (now or utcnow()).astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    return [first + timedelta(days=i) for i in range(days)], datetime.combine(first, time.min, tzinfo=UTC)


def utc_day(column: Any, is_sqlite: bool) -> ColumnElement[Any]:
    """The UTC calendar day of a UTCDateTime column, as an SQL expression."""
    if is_sqlite:
        return func.date(column)  # stored as naive UTC text 'YYYY-MM-DD HH:MM:SS...' (db.base.UTCDateTime)
    # timestamptz: without the explicit zone the session's TimeZone setting would pick the day. The zone is
    # inlined, not bound: a bind parameter would make the GROUP BY expression differ from the selected one.
    return cast(func.timezone(literal_column("'UTC'"), column), Date)


def _day(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def percentile_cont(sorted_values: Sequence[float], q: float) -> float | None:
    """PostgreSQL's ``percentile_cont(q)`` over already sorted values; None when there are none."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return _round(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _scoped(stmt: Select[Any], owner_column: Any, owner_id: str | None) -> Select[Any]:
    return stmt if owner_id is None else stmt.where(owner_column == owner_id)


def jobs_by_day(
    session: Session, is_sqlite: bool, since: datetime, owner_id: str | None = None
) -> dict[date, Counter[str]]:
    """Jobs submitted since ``since``, per UTC day and status (one user's, or everyone's when owner_id is None)."""
    day = utc_day(Job.created_at, is_sqlite).label("day")
    stmt = _scoped(select(day, Job.status, func.count()).where(Job.created_at >= since), Job.owner_id, owner_id)
    out: dict[date, Counter[str]] = defaultdict(Counter)
    for d, status, n in session.execute(stmt.group_by(day, Job.status)):
        out[_day(d)][status] += int(n)
    return out


def images_by_day(session: Session, is_sqlite: bool, since: datetime, owner_id: str | None = None) -> Counter[date]:
    day = utc_day(Image.created_at, is_sqlite).label("day")
    # Images in the Trash are not counted (gallery/trash.py); a restored one counts again on the day it was made.
    recent = select(day, func.count()).where(Image.created_at >= since, Image.trashed_at.is_(None))
    stmt = _scoped(recent, Image.owner_id, owner_id)
    return Counter({_day(d): int(n) for d, n in session.execute(stmt.group_by(day))})


def owner_per_day(session: Session, is_sqlite: bool, owner_id: str, days: int) -> list[StatsDay]:
    """A user's jobs, failed jobs and images for each of the last ``days`` UTC days, zeros included."""
    dates, since = window(days)
    jobs = jobs_by_day(session, is_sqlite, since, owner_id)
    images = images_by_day(session, is_sqlite, since, owner_id)
    return [StatsDay(date=d, jobs=sum(jobs[d].values()), images=images[d], failed=jobs[d]["failed"]) for d in dates]


def _succeeded_since(since: datetime, owner_id: str | None) -> list[ColumnElement[bool]]:
    conditions = [Job.created_at >= since, Job.status == "succeeded", Job.duration_seconds.is_not(None)]
    return conditions if owner_id is None else [*conditions, Job.owner_id == owner_id]


def duration_summary(session: Session, is_sqlite: bool, since: datetime, owner_id: str) -> dict[str, float | None]:
    """``/stats``' ``duration_seconds``: p50, p95 and mean of ``duration_percentiles``' jobs (the same ones the
    admin analytics use)."""
    _, (p50, p95) = duration_percentiles(session, is_sqlite, since, owner_id)
    mean = session.scalar(select(func.avg(Job.duration_seconds)).where(*_succeeded_since(since, owner_id)))
    return {"p50": p50, "p95": p95, "mean": _round(mean)}


def duration_percentiles(
    session: Session, is_sqlite: bool, since: datetime, owner_id: str | None = None
) -> tuple[dict[date, Percentiles], Percentiles]:
    """(p50, p95) run time of the succeeded jobs submitted since ``since``, per UTC day and over all of them (one
    user's, or everyone's when owner_id is None): the one definition of "job duration" (see the module's doc)."""
    conditions = _succeeded_since(since, owner_id)
    day = utc_day(Job.created_at, is_sqlite).label("day")
    if is_sqlite:
        by_day: dict[date, list[float]] = defaultdict(list)
        everything: list[float] = []
        rows = session.execute(select(day, Job.duration_seconds).where(*conditions).order_by(Job.duration_seconds))
        for d, seconds in rows:
            by_day[_day(d)].append(float(seconds))
            everything.append(float(seconds))
        per_day = {d: (percentile_cont(v, 0.5), percentile_cont(v, 0.95)) for d, v in by_day.items()}
        return per_day, (percentile_cont(everything, 0.5), percentile_cont(everything, 0.95))
    pcts = [func.percentile_cont(q).within_group(Job.duration_seconds) for q in _QUANTILES]
    per_day = {
        _day(d): (_round(p50), _round(p95))
        for d, p50, p95 in session.execute(select(day, *pcts).where(*conditions).group_by(day))
    }
    p50, p95 = session.execute(select(*pcts).where(*conditions)).one()
    return per_day, (_round(p50), _round(p95))


class AnalyticsService:
    """The administrators' view of the whole install: every user's jobs and images."""

    def __init__(self, db: Database):
        self.db = db

    def admin(self, days: int) -> AdminAnalytics:
        dates, since = window(days)
        sqlite = self.db.is_sqlite
        with self.db.session() as session:
            jobs = jobs_by_day(session, sqlite, since)
            images = images_by_day(session, sqlite, since)
            per_day, overall = duration_percentiles(session, sqlite, since)
            users = int(session.scalar(select(func.count()).select_from(User)) or 0)
            active = int(session.scalar(select(func.count(distinct(Job.owner_id))).where(Job.created_at >= since)) or 0)
            style = func.coalesce(func.nullif(Job.params["style"].as_string(), ""), "none")
            top_styles = self._top(session, style, since)
            top_models = self._top(session, Job.model_id, since)
        rows = [
            AnalyticsDay(
                date=d,
                jobs=sum(jobs[d].values()),
                succeeded=jobs[d]["succeeded"],
                failed=jobs[d]["failed"],
                canceled=jobs[d]["canceled"],
                images=images[d],
                p50_seconds=per_day.get(d, (None, None))[0],
                p95_seconds=per_day.get(d, (None, None))[1],
            )
            for d in dates
        ]
        succeeded = sum(r.succeeded for r in rows)
        failed = sum(r.failed for r in rows)
        totals = AnalyticsTotals(
            jobs=sum(r.jobs for r in rows),
            succeeded=succeeded,
            failed=failed,
            canceled=sum(r.canceled for r in rows),
            images=sum(r.images for r in rows),
            users=users,
            active_users=active,
            failure_rate=_round(failed / (succeeded + failed)) if succeeded + failed else None,
            p50_seconds=overall[0],
            p95_seconds=overall[1],
        )
        return AdminAnalytics(days=rows, totals=totals, top_styles=top_styles, top_models=top_models)

    def _top(
        self, session: Session, expr: ColumnElement[Any] | InstrumentedAttribute[Any], since: datetime
    ) -> list[NameCount]:
        """The TOP most frequent values of ``expr`` among jobs in the window, most frequent first."""
        # Grouped in an outer query: expr may hold bind parameters (a JSON path), and PostgreSQL treats
        # "$1" in SELECT and "$2" in GROUP BY as different expressions.
        names = select(expr.label("name")).where(Job.created_at >= since).subquery()
        n = func.count().label("n")
        stmt = select(names.c.name, n).group_by(names.c.name).order_by(desc(n), names.c.name).limit(TOP)
        return [NameCount(name=str(name), count=int(count)) for name, count in session.execute(stmt)]
