"""Who may order the queue (issue 13, item 5): a submitter's ``priority`` only reorders their own jobs, and only an
administrator's ``system_priority`` goes ahead of the users' turns. Both claim paths (one job per claim, and the
PostgreSQL batch claim with its LATERAL seek), submit and batch positions, and job views."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.app import create_app
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import auth_headers, create_user, job_count, png_bytes

GEN = "/api/v1/generations"
BODY = {"prompt": "a lighthouse at dusk", "size": "64x64", "steps": 1}


def claim_one_by_one(services: Services) -> list[Job]:
    jobs = []
    while (job := services.queue.claim("w")) is not None:
        jobs.append(job)
    return jobs


def claim_in_batches(services: Services, size: int = 8) -> list[Job]:
    """``claim_batch`` (one LATERAL candidates query per batch on PostgreSQL; one job at a time on SQLite)."""
    jobs: list[Job] = []
    while batch := services.queue.claim_batch("w", size):
        jobs.extend(batch)
    return jobs


CLAIMS = pytest.mark.parametrize("claim", [claim_one_by_one, claim_in_batches], ids=["claim", "claim_batch"])


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services, start_workers=False)) as c:
        yield c


@pytest.fixture
def users(services: Services) -> dict[str, dict[str, str]]:
    """Two plain users (A and B) and the install's administrator, each as {"id", "Authorization"}."""
    a = create_user(services, "a@example.com")
    b = create_user(services, "b@example.com")
    return {
        name: {"id": uid, **auth_headers(services, uid)} for name, uid in (("A", a), ("B", b), ("admin", LOCAL_USER_ID))
    }


def post(api: TestClient, user: dict[str, str], **body: Any) -> dict[str, Any]:
    r = api.post(GEN, json={**BODY, **body}, headers={"Authorization": user["Authorization"]})
    assert r.status_code == 202, r.text
    accepted: dict[str, Any] = r.json()
    return accepted


@CLAIMS
def test_a_users_priority_never_takes_another_users_turn(
    api: TestClient, services: Services, users: dict[str, dict[str, str]], claim: Callable[[Services], list[Job]]
) -> None:
    a = [post(api, users["A"], prompt=f"a{i}")["id"] for i in range(4)]
    b = [post(api, users["B"], prompt=f"b{i}", priority=10)["id"] for i in range(4)]
    owner = {**dict.fromkeys(a, "A"), **dict.fromkeys(b, "B")}
    order = claim(services)
    # Before the fix B's priority 10 sorted ahead of the turns: ABBBBAAA.
    assert "".join(owner[job.id] for job in order) == "ABABABAB"
    assert [job.id for job in order] == [a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3]]


@CLAIMS
def test_a_users_priority_reorders_their_own_jobs(
    api: TestClient, services: Services, users: dict[str, dict[str, str]], claim: Callable[[Services], list[Job]]
) -> None:
    a = [post(api, users["A"], prompt=f"a{i}")["id"] for i in range(3)]
    a_low = post(api, users["A"], prompt="a-low", priority=-3)["id"]
    a_urgent = post(api, users["A"], prompt="a-urgent", priority=5)["id"]
    b = [post(api, users["B"], prompt=f"b{i}")["id"] for i in range(2)]
    order = [job.id for job in claim(services)]
    # A's urgent job goes first among A's, the low one last; the turns still alternate A, B, A, B, then A's rest.
    assert order == [a_urgent, b[0], a[0], b[1], a[1], a[2], a_low]


@CLAIMS
def test_an_administrators_system_priority_goes_ahead_of_the_turns(
    api: TestClient, services: Services, users: dict[str, dict[str, str]], claim: Callable[[Services], list[Job]]
) -> None:
    a = [post(api, users["A"], prompt=f"a{i}")["id"] for i in range(2)]
    b = [post(api, users["B"], prompt=f"b{i}")["id"] for i in range(2)]
    urgent = post(api, users["admin"], prompt="incident", system_priority=5)
    assert urgent["queue_position"] == 1
    view = api.get(urgent["urls"]["get"], headers={"Authorization": users["admin"]["Authorization"]}).json()
    assert (view["system_priority"], view["priority"], view["queue_position"]) == (5, 0, 1)
    assert [job.id for job in claim(services)] == [urgent["id"], a[0], b[0], a[1], b[1]]


def test_batches_keep_the_users_turns(api: TestClient, services: Services, users: dict[str, dict[str, str]]) -> None:
    a = [post(api, users["A"], prompt=f"a{i}")["id"] for i in range(4)]
    b = [post(api, users["B"], prompt=f"b{i}", priority=10)["id"] for i in range(4)]
    owner = {**dict.fromkeys(a, "A"), **dict.fromkeys(b, "B")}
    # Batches of 3 end on A's turn, then on B's: the next batch starts with whoever waited longer. Before each
    # owner's turn was stamped in claim order, both tied and A (with the older jobs) went first again: ABA ABA BB.
    assert "".join(owner[job.id] for job in claim_in_batches(services, 3)) == "ABABABAB"


def test_only_administrators_may_set_system_priority(
    api: TestClient, services: Services, users: dict[str, dict[str, str]]
) -> None:
    plain = {"Authorization": users["A"]["Authorization"]}
    r = api.post(GEN, json={**BODY, "system_priority": 10}, headers=plain)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required", r.text
    assert r.json()["error"]["details"] == {"field": "system_priority"}
    r = api.post(f"{GEN}/batch", json={"generations": [BODY, {**BODY, "system_priority": 0}]}, headers=plain)
    assert r.status_code == 403 and r.json()["error"]["details"] == {"field": "system_priority", "index": 1}
    # Multipart submissions go through the same check.
    params = '{"prompt": "x", "size": "64x64", "system_priority": 3}'
    r = api.post(GEN, data={"params": params}, files={"init_image": ("in.png", png_bytes())}, headers=plain)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required", r.text
    # An administrator's API key without the admin scope acts as a plain user here too.
    key = api.post(
        "/api/v1/api-keys",
        json={"name": "script", "scopes": ["read", "generate"]},
        headers={"Authorization": users["admin"]["Authorization"]},
    ).json()["key"]
    r = api.post(GEN, json={**BODY, "system_priority": 1}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required", r.text
    assert job_count(services) == 0
    # The submitter's own priority stays open to everyone.
    assert post(api, users["A"], priority=10)["queue_position"] == 1


def test_positions_follow_system_priority_and_the_owners_own_order(
    api: TestClient, users: dict[str, dict[str, str]]
) -> None:
    """Ahead of a queued job: every job with a higher system priority, other users' jobs with the same one queued
    before it, and the owner's own jobs that their priority (then age) puts first."""

    def headers(user: str) -> dict[str, str]:
        return {"Authorization": users[user]["Authorization"]}

    a = [post(api, users["A"], prompt=f"a{i}") for i in range(2)]
    b = post(api, users["B"], prompt="b", priority=10)
    assert b["queue_position"] == 3  # B's priority 10 does not pass A's older jobs
    a_urgent = post(api, users["A"], prompt="a-urgent", priority=5)
    assert a_urgent["queue_position"] == 2  # passes A's own earlier jobs, not B's
    r = api.post(
        f"{GEN}/batch",
        json={"generations": [{**BODY, "priority": -1}, {**BODY, "priority": 7}, BODY]},
        headers=headers("A"),
    )
    assert r.status_code == 202, r.text
    low, top, plain = r.json()["jobs"]
    assert [j["queue_position"] for j in (low, top, plain)] == [7, 2, 6]

    def place(job: dict[str, Any], user: str = "A") -> int:
        position: int = api.get(job["urls"]["get"], headers=headers(user)).json()["queue_position"]
        return position

    assert place(top) == 2  # behind b only
    assert place(a_urgent) == 3  # behind b and A's own top
    assert [place(a[0]), place(a[1])] == [3, 4]  # behind A's top and urgent jobs
    assert place(b, "B") == 3  # behind a0 and a1
    assert [place(plain), place(low)] == [6, 7]
    # An administrator's system priority goes ahead of all of them.
    urgent = api.post(GEN, json={**BODY, "system_priority": 1}, headers=headers("admin")).json()
    assert urgent["queue_position"] == 1 and place(urgent, "admin") == 1
    assert place(top) == 3
