"""Usage over time: the per-day series of GET /stats and the admin analytics, checked against known rows
(jobs and images written with chosen timestamps and durations, so every count and percentile is known).

The same data runs on SQLite (percentiles in Python) and PostgreSQL (percentile_cont in SQL): both must give
these numbers."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from studiolo.domain.accounts.models import LOCAL_USER_ID, User
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.analytics import percentile_cont, window
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import auth_headers, create_user

TODAY = datetime.now(UTC).date()


def at(days_ago: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(TODAY - timedelta(days=days_ago), time(hour, minute), tzinfo=UTC)


def add_job(
    services: Services,
    owner: str,
    created: datetime,
    status: str = "succeeded",
    *,
    seconds: float | None = None,
    style: str | None = None,
    model: str = "echo",
) -> str:
    """A job row as the worker leaves it; succeeded ones ran ``seconds`` (finished - started)."""
    with services.db.session() as session:
        job = Job(
            owner_id=owner,
            kind="txt2img",
            status=status,
            params={"prompt": "known", "style": style, "steps": 2},
            model_id=model,
            seeds=[1],
            created_at=created,
            run_after=created,
        )
        if status in ("succeeded", "failed", "canceled", "running"):
            job.started_at = created + timedelta(seconds=1)
        if status in ("succeeded", "failed", "canceled"):
            job.finished_at = job.started_at + timedelta(seconds=seconds or 0.5) if job.started_at else created
        if status == "succeeded":
            assert seconds is not None
            job.duration_seconds = (job.finished_at - job.started_at).total_seconds()  # type: ignore[operator]
        session.add(job)
        session.flush()
        return job.id


def add_image(services: Services, owner: str, created: datetime) -> str:
    with services.db.session() as session:
        img = Image(
            owner_id=owner,
            prompt="known",
            model_id="echo",
            seed=1,
            steps=2,
            guidance=0.0,
            width=64,
            height=64,
            original_key=f"images/none-{created.timestamp()}.png",
            thumbnail_keys={},
            created_at=created,
        )
        session.add(img)
        session.flush()
        return img.id


def by_date(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["date"]: r for r in rows}


def day(days_ago: int) -> str:
    return (TODAY - timedelta(days=days_ago)).isoformat()


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert set(r.json()) == {"error", "request_id"} and r.json()["error"]["code"] == code, r.text


# --- the window and the percentile formula -------------------------------------------------------------------
def test_window_is_every_utc_day_oldest_first() -> None:
    now = datetime(2024, 3, 1, 0, 30, tzinfo=UTC)
    dates, since = window(3, now)
    assert dates == [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]
    assert since == datetime(2024, 2, 28, tzinfo=UTC)
    # An aware time in another zone is still bucketed by its UTC day.
    from zoneinfo import ZoneInfo

    dates, _ = window(1, datetime(2024, 3, 1, 20, 0, tzinfo=ZoneInfo("America/New_York")))
    assert dates == [date(2024, 3, 2)]


def test_percentile_cont_matches_postgresql_definition() -> None:
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([7.0], 0.95) == 7.0
    assert percentile_cont([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile_cont([1.0, 2.0, 3.0, 4.0], 0.95) == 3.85
    assert percentile_cont([1.0, 2.0, 3.0, 4.0, 10.0], 0.95) == 8.8


# --- GET /stats per_day --------------------------------------------------------------------------------------
def test_stats_per_day_counts_the_callers_jobs_images_and_failures(
    api: TestClient, client: TestClient, services: Services
) -> None:
    other = create_user(services, "other@example.com")
    add_job(services, LOCAL_USER_ID, at(0, 0, 0), seconds=2)  # the first instant of today
    add_job(services, LOCAL_USER_ID, at(0, 23, 59), "failed")
    add_job(services, LOCAL_USER_ID, at(2), "failed")
    add_job(services, LOCAL_USER_ID, at(2), "canceled")
    add_job(services, LOCAL_USER_ID, at(2), "queued")
    add_job(services, LOCAL_USER_ID, at(45), seconds=1)  # outside the default 30 days
    add_image(services, LOCAL_USER_ID, at(0, 0, 0))
    add_image(services, LOCAL_USER_ID, at(2))
    add_image(services, LOCAL_USER_ID, at(2))
    add_job(services, other, at(0), "failed")  # another user's: never in the owner's series
    add_image(services, other, at(0))

    r = client.get("/api/v1/stats")
    assert r.status_code == 200, r.text
    per_day = r.json()["per_day"]
    assert len(per_day) == 30
    assert [d["date"] for d in per_day] == sorted(d["date"] for d in per_day)  # oldest first
    assert per_day[-1]["date"] == TODAY.isoformat() and per_day[0]["date"] == day(29)
    days = by_date(per_day)
    assert days[day(0)] == {"date": day(0), "jobs": 2, "images": 1, "failed": 1}
    assert days[day(2)] == {"date": day(2), "jobs": 3, "images": 2, "failed": 1}
    assert days[day(1)] == {"date": day(1), "jobs": 0, "images": 0, "failed": 0}
    assert sum(d["jobs"] for d in per_day) == 5
    # The totals are all-time, as before; only per_day follows `days`.
    assert r.json()["jobs"]["succeeded"] == 2 and r.json()["images"] == 3

    wide = by_date(client.get("/api/v1/stats", params={"days": 60}).json()["per_day"])
    assert len(wide) == 60 and wide[day(45)]["jobs"] == 1
    assert [d["date"] for d in client.get("/api/v1/stats", params={"days": 1}).json()["per_day"]] == [day(0)]

    # The other user sees only their own rows.
    theirs = by_date(api.get("/api/v1/stats", headers=auth_headers(services, other)).json()["per_day"])
    assert theirs[day(0)] == {"date": day(0), "jobs": 1, "images": 1, "failed": 1}
    assert sum(d["jobs"] for d in theirs.values()) == 1


@pytest.mark.parametrize("days", ["0", "366", "-1", "x"])
def test_stats_days_is_validated(client: TestClient, days: str) -> None:
    r = client.get("/api/v1/stats", params={"days": days})
    assert_error(r, 422, "invalid_input")
    assert r.json()["error"]["details"]["errors"][0]["loc"] == ["query", "days"]


# --- GET /admin/analytics -------------------------------------------------------------------------------------
def seed_known_usage(services: Services) -> dict[str, str]:
    alice = create_user(services, "alice@example.com")
    bob = create_user(services, "bob@example.com")
    create_user(services, "idle@example.com")  # an account with no jobs: a user, not an active one
    # Two days ago: four succeeded jobs of 1, 2, 3 and 4 seconds, one failed.
    for seconds, owner, style in [(1, alice, "ghibli"), (3, alice, "ghibli"), (2, bob, None), (4, bob, "anime")]:
        add_job(services, owner, at(2), seconds=seconds, style=style)
    add_job(services, bob, at(2, 23, 59), "failed", style="ghibli", model="sd-turbo")
    # Today: one succeeded job of 10 seconds, two failed, one canceled, one still queued.
    add_job(services, LOCAL_USER_ID, at(0, 0, 0), seconds=10, style="ghibli", model="sd-turbo")
    add_job(services, alice, at(0), "failed", style="")  # an empty style counts as none
    add_job(services, alice, at(0), "failed")
    add_job(services, bob, at(0), "canceled", model="sd-turbo")
    add_job(services, bob, at(0), "queued", style="pixel-art")
    # 40 days ago: outside the default window, inside a 60-day one.
    add_job(services, alice, at(40), seconds=100, style="noir", model="old-model")
    for owner, when in [(alice, at(2)), (alice, at(2)), (bob, at(0)), (LOCAL_USER_ID, at(0)), (alice, at(40))]:
        add_image(services, owner, when)
    return {"alice": alice, "bob": bob}


def test_admin_analytics_numbers(client: TestClient, services: Services) -> None:
    seed_known_usage(services)
    with services.db.session() as session:
        accounts = session.scalar(select(func.count()).select_from(User))
    r = client.get("/api/v1/admin/analytics")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"days", "totals", "top_styles", "top_models"}
    assert len(body["days"]) == 30 and body["days"][-1]["date"] == day(0) and body["days"][0]["date"] == day(29)
    days = by_date(body["days"])
    assert days[day(2)] == {
        "date": day(2),
        "jobs": 5,
        "succeeded": 4,
        "failed": 1,
        "canceled": 0,
        "images": 2,
        "p50_seconds": 2.5,  # percentile_cont over 1, 2, 3, 4
        "p95_seconds": 3.85,
    }
    assert days[day(0)] == {
        "date": day(0),
        "jobs": 5,
        "succeeded": 1,
        "failed": 2,
        "canceled": 1,
        "images": 2,
        "p50_seconds": 10.0,
        "p95_seconds": 10.0,
    }
    assert days[day(1)] == {
        "date": day(1),
        "jobs": 0,
        "succeeded": 0,
        "failed": 0,
        "canceled": 0,
        "images": 0,
        "p50_seconds": None,
        "p95_seconds": None,
    }
    assert body["totals"] == {
        "jobs": 10,
        "succeeded": 5,
        "failed": 3,
        "canceled": 1,
        "images": 4,
        "users": accounts,
        "active_users": 3,  # alice, bob and the local owner; idle@ has no job
        "failure_rate": 0.375,  # 3 / (5 + 3)
        "p50_seconds": 3.0,  # over 1, 2, 3, 4, 10
        "p95_seconds": 8.8,
    }
    assert body["top_styles"] == [  # most used first, ties by name
        {"name": "ghibli", "count": 4},
        {"name": "none", "count": 4},
        {"name": "anime", "count": 1},
        {"name": "pixel-art", "count": 1},
    ]
    assert body["top_models"] == [{"name": "echo", "count": 7}, {"name": "sd-turbo", "count": 3}]

    wide = client.get("/api/v1/admin/analytics", params={"days": 60}).json()
    assert len(wide["days"]) == 60
    assert by_date(wide["days"])[day(40)]["p50_seconds"] == 100.0
    assert wide["totals"]["jobs"] == 11 and wide["totals"]["images"] == 5
    assert wide["totals"]["p50_seconds"] == 3.5  # 1, 2, 3, 4, 10, 100
    assert {"name": "noir", "count": 1} in wide["top_styles"]
    assert {"name": "old-model", "count": 1} in wide["top_models"]

    today_only = client.get("/api/v1/admin/analytics", params={"days": 1}).json()
    assert [d["date"] for d in today_only["days"]] == [day(0)]
    assert today_only["totals"]["active_users"] == 3 and today_only["totals"]["failure_rate"] == pytest.approx(2 / 3)


def test_admin_analytics_top_lists_keep_the_eight_most_used(client: TestClient, services: Services) -> None:
    for i in range(10):
        for _ in range(i + 1):
            add_job(services, LOCAL_USER_ID, at(1), "queued", style=f"style-{i}", model=f"model-{i}")
    body = client.get("/api/v1/admin/analytics").json()
    assert [s["name"] for s in body["top_styles"]] == [f"style-{i}" for i in range(9, 1, -1)]
    assert [m["count"] for m in body["top_models"]] == list(range(10, 2, -1))


def test_admin_analytics_of_an_empty_install(client: TestClient) -> None:
    body = client.get("/api/v1/admin/analytics", params={"days": 7}).json()
    assert len(body["days"]) == 7 and all(d["jobs"] == 0 and d["p50_seconds"] is None for d in body["days"])
    totals = body["totals"]
    assert totals["jobs"] == 0 and totals["failure_rate"] is None and totals["p95_seconds"] is None
    assert totals["active_users"] == 0 and totals["users"] >= 1
    assert body["top_styles"] == [] and body["top_models"] == []


def test_admin_analytics_is_for_admins_only(api: TestClient, client: TestClient, services: Services) -> None:
    user = create_user(services, "user@example.com")
    assert_error(api.get("/api/v1/admin/analytics", headers=auth_headers(services, user)), 403, "admin_required")
    assert_error(api.get("/api/v1/admin/analytics"), 401, "not_authenticated")
    for days in ("0", "366", "many"):
        assert_error(client.get("/api/v1/admin/analytics", params={"days": days}), 422, "invalid_input")
