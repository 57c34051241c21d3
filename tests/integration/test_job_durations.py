"""One definition of "job duration" everywhere: the user's GET /stats (the dashboard) and the admin analytics give
the same p50 and p95 for the same jobs, and both equal Python's reference, ``statistics.quantiles(method=
"inclusive")`` (linear interpolation, PostgreSQL's percentile_cont): run time of the succeeded jobs submitted in the
window. The dashboard once took every job ever and rounded to the nearest index, and showed 21.1 s where the admin
page showed 47.3 s for the same jobs. Runs on SQLite (percentiles in Python) and PostgreSQL (in SQL)."""

from __future__ import annotations

import re
import statistics

import pytest
from fastapi.testclient import TestClient

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.services import Services
from tests.helpers import auth_headers, create_user
from tests.integration.test_analytics import add_job, at

# Skewed like real run times: mostly quick, a slow tail (a model load, a big batch).
SECONDS = [3.25, 4.5, 2.75, 5.125, 47.5, 3.0, 6.25, 2.5, 4.0, 3.75, 61.0, 5.5, 3.5, 4.25, 2.0, 38.75, 4.75]


def reference(values: list[float]) -> dict[str, float]:
    """p50, p95 and mean by the standard library: quantiles(n=100) gives the 1st..99th percentiles."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": statistics.median(values), "p95": cuts[94], "mean": statistics.fmean(values)}


def seed(services: Services, owner: str) -> None:
    for i, seconds in enumerate(SECONDS):
        add_job(services, owner, at(i % 20), seconds=seconds)
    # Not in the window's durations: older than 30 days, failed, canceled, still running.
    add_job(services, owner, at(45), seconds=900)
    add_job(services, owner, at(1), "failed")
    add_job(services, owner, at(1), "canceled")
    add_job(services, owner, at(0), "running")


def test_dashboard_stats_and_admin_analytics_agree_with_the_python_reference(
    client: TestClient, services: Services
) -> None:
    seed(services, LOCAL_USER_ID)
    expected = reference(SECONDS)
    # The old nearest-index rule would have said otherwise: the test can tell the two apart.
    assert sorted(SECONDS)[round(0.95 * (len(SECONDS) - 1))] != pytest.approx(expected["p95"])

    stats = client.get("/api/v1/stats").json()["duration_seconds"]
    totals = client.get("/api/v1/admin/analytics", params={"days": 30}).json()["totals"]
    for key in ("p50", "p95", "mean"):
        assert stats[key] == pytest.approx(expected[key], abs=1e-6), key
    assert totals["p50_seconds"] == pytest.approx(expected["p50"], abs=1e-6)
    assert totals["p95_seconds"] == pytest.approx(expected["p95"], abs=1e-6)

    # The pages print the same figure, and say what it is.
    dashboard = client.get("/dashboard").text
    admin = client.get("/admin").text
    shown = f"{expected['p95']:.1f} s"
    assert re.search(rf"p95</dt><dd>{re.escape(shown)}</dd>", dashboard), dashboard
    assert f'<span class="value">{shown}</span><span class="label">p95 job time</span>' in admin
    assert "succeeded jobs" in dashboard and "succeeded jobs" in admin


def test_stats_durations_are_the_callers_own_and_follow_days(
    api: TestClient, client: TestClient, services: Services
) -> None:
    other = create_user(services, "other@example.com")
    seed(services, LOCAL_USER_ID)
    add_job(services, other, at(0), seconds=500)  # someone else's slow job: in the admin view only
    mine = client.get("/api/v1/stats").json()["duration_seconds"]
    assert mine["p95"] == pytest.approx(reference(SECONDS)["p95"], abs=1e-6)
    theirs = api.get("/api/v1/stats", headers=auth_headers(services, other)).json()["duration_seconds"]
    assert theirs == {"p50": 500.0, "p95": 500.0, "mean": 500.0}
    everyone = client.get("/api/v1/admin/analytics").json()["totals"]
    assert everyone["p95_seconds"] == pytest.approx(reference([*SECONDS, 500.0])["p95"], abs=1e-6)

    # A wider window takes the 45-day-old job in, on both.
    wide = client.get("/api/v1/stats", params={"days": 60}).json()["duration_seconds"]
    assert wide["p95"] == pytest.approx(reference([*SECONDS, 900.0])["p95"], abs=1e-6)
    assert client.get("/api/v1/stats", params={"days": 1}).json()["duration_seconds"]["p50"] == pytest.approx(
        statistics.median([s for i, s in enumerate(SECONDS) if i % 20 == 0]), abs=1e-6
    )
    assert api.get("/api/v1/stats", headers=auth_headers(services, create_user(services, "new@example.com"))).json()[
        "duration_seconds"
    ] == {"p50": None, "p95": None, "mean": None}
