"""Administrators' job routes: every user's jobs (filters, keyset pages) and retrying anyone's failed job."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from studiolo.db.base import utcnow
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import auth_headers, create_user, drain, submit

ADMIN_JOBS = "/api/v1/admin/jobs"


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert set(r.json()) == {"error", "request_id"} and r.json()["error"]["code"] == code, r.text


def end_job(services: Services, job_id: str, status: str) -> None:
    """Leave a queued job failed or canceled, as a worker or its owner would."""
    with services.db.session() as session:
        job = session.get_one(Job, job_id)
        job.status = status
        job.attempts = job.max_attempts if status == "failed" else 0
        job.error_code = "internal_error" if status == "failed" else "canceled"
        job.error_message = "boom" if status == "failed" else "Canceled by its owner."
        job.finished_at = utcnow()


def ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [j["id"] for j in r.json()["items"]]


def test_admin_lists_every_users_jobs_with_filters_and_pages(client: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com")
    bob = create_user(services, "bob@example.com")
    mine = submit(services, LOCAL_USER_ID)
    a1 = submit(services, alice, prompt="alice one")
    b1 = submit(services, bob, prompt="bob one")
    a2 = submit(services, alice, prompt="alice two", model="studiolo-demo")
    end_job(services, a1, "failed")
    end_job(services, b1, "canceled")

    r = client.get(ADMIN_JOBS)
    assert ids(r) == [a2, b1, a1, mine]  # newest first, everyone's
    assert r.json()["next_cursor"] is None
    first = r.json()["items"][0]
    assert (first["owner_id"], first["owner_email"]) == (alice, "alice@example.com")
    assert first["params"]["prompt"] == "alice two" and first["model"] == "studiolo-demo"
    assert first["urls"]["get"] == f"/api/v1/jobs/{a2}" and first["status"] == "queued"
    failed = r.json()["items"][2]
    assert (
        failed["error"] == {"code": "internal_error", "message": "boom"}
        and failed["owner_email"] == "alice@example.com"
    )
    # The same fields as the owner's own view of the job, plus the owner.
    own_view = client.get(f"/api/v1/jobs/{mine}").json()
    admin_view = r.json()["items"][3]
    assert admin_view == {**own_view, "owner_id": LOCAL_USER_ID, "owner_email": admin_view["owner_email"]}

    assert ids(client.get(ADMIN_JOBS, params={"status": "failed"})) == [a1]
    assert ids(client.get(ADMIN_JOBS, params={"status": "queued"})) == [a2, mine]
    assert ids(client.get(ADMIN_JOBS, params={"status": "running"})) == []
    assert ids(client.get(ADMIN_JOBS, params={"user": alice})) == [a2, a1]
    assert ids(client.get(ADMIN_JOBS, params={"user": "no-such-user"})) == []
    assert ids(client.get(ADMIN_JOBS, params={"model": "studiolo-demo"})) == [a2]
    assert ids(client.get(ADMIN_JOBS, params={"model": "echo", "user": alice})) == [a1]
    assert ids(client.get(ADMIN_JOBS, params={"model": "echo", "status": "canceled", "user": bob})) == [b1]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get(ADMIN_JOBS, params=params).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [a2, b1, a1, mine]
    page = client.get(ADMIN_JOBS, params={"limit": 1, "user": alice}).json()
    assert ids(client.get(ADMIN_JOBS, params={"limit": 1, "user": alice, "cursor": page["next_cursor"]})) == [a1]

    assert_error(client.get(ADMIN_JOBS, params={"status": "lost"}), 422, "invalid_status")
    assert_error(client.get(ADMIN_JOBS, params={"limit": 0}), 422, "invalid_input")
    assert_error(client.get(ADMIN_JOBS, params={"limit": 101}), 422, "invalid_input")
    for name in ("user", "model", "cursor"):  # NUL cannot reach PostgreSQL (it would be a 500 there)
        assert_error(client.get(ADMIN_JOBS, params={name: "a\x00"}), 422, "invalid_input")
    # NUL is refused before routing, like in every query string (studiolo.text_guard).
    assert_error(client.get(ADMIN_JOBS, params={"status": "failed\x00"}), 422, "invalid_input")


def test_admin_retries_another_users_failed_job(client: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com")
    job_id = submit(services, alice, prompt="retry me", seed=77)
    end_job(services, job_id, "failed")

    r = client.post(f"{ADMIN_JOBS}/{job_id}/retry", headers={"User-Agent": "admin-console"})
    assert r.status_code == 202, r.text
    assert r.json() == {
        "id": job_id,
        "status": "queued",
        "queue_position": 1,
        "queue_position_capped": False,
        "urls": {
            "get": f"/api/v1/jobs/{job_id}",
            "cancel": f"/api/v1/jobs/{job_id}/cancel",
            "events": f"/api/v1/jobs/{job_id}/events",
        },
    }
    # As the owner's retry: queued again with fresh attempts, no error, same seeds; and it is still alice's.
    view = services.generation.get(alice, job_id)
    assert (view.status, view.attempts, view.error, view.seeds) == ("queued", 0, None, [77])
    drain(services)
    done = services.generation.get(alice, job_id)
    assert done.status == "succeeded" and len(done.outputs) == 1
    assert client.get(f"/api/v1/images/{done.outputs[0].image_id}").status_code == 404  # alice's picture, not ours

    events = client.get("/api/v1/admin/audit", params={"action": "job_retried"}).json()["items"]
    assert len(events) == 1
    event = events[0]
    assert (event["actor_id"], event["target_id"]) == (LOCAL_USER_ID, alice)
    assert event["details"] == {"job_id": job_id, "previous": "failed"}
    assert event["user_agent"] == "admin-console"

    # A canceled job of the admin's own can be retried the same way.
    own = submit(services, LOCAL_USER_ID)
    end_job(services, own, "canceled")
    assert client.post(f"{ADMIN_JOBS}/{own}/retry").status_code == 202
    assert services.generation.get(LOCAL_USER_ID, own).status == "queued"


def test_admin_retry_refuses_what_the_owner_retry_refuses(
    api: TestClient, client: TestClient, services: Services
) -> None:
    alice = create_user(services, "alice@example.com")
    queued = submit(services, alice)
    r = client.post(f"{ADMIN_JOBS}/{queued}/retry")
    assert_error(r, 409, "job_not_retryable")
    assert r.json()["error"]["details"] == {"status": "queued"}
    # The owner's own retry answers the same.
    owner_r = api.post(f"/api/v1/jobs/{queued}/retry", headers=auth_headers(services, alice))
    assert_error(owner_r, 409, "job_not_retryable")
    drain(services)
    assert_error(client.post(f"{ADMIN_JOBS}/{queued}/retry"), 409, "job_not_retryable")  # succeeded
    assert_error(client.post(f"{ADMIN_JOBS}/no-such-job/retry"), 404, "job_not_found")
    assert_error(client.post(f"{ADMIN_JOBS}/a%00b/retry"), 422, "invalid_input")  # NUL never reaches PostgreSQL
    assert client.get("/api/v1/admin/audit", params={"action": "job_retried"}).json()["items"] == []


def test_admin_job_routes_refuse_non_admins(api: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com")
    job_id = submit(services, alice)
    end_job(services, job_id, "failed")
    headers = auth_headers(services, alice)
    assert_error(api.get(ADMIN_JOBS, headers=headers), 403, "admin_required")
    assert_error(api.get(ADMIN_JOBS, params={"user": alice}, headers=headers), 403, "admin_required")
    # Not even their own job: the owner's route is /jobs/{id}/retry.
    assert_error(api.post(f"{ADMIN_JOBS}/{job_id}/retry", headers=headers), 403, "admin_required")
    assert services.generation.get(alice, job_id).status == "failed"
    assert_error(api.get(ADMIN_JOBS), 401, "not_authenticated")
    assert_error(api.post(f"{ADMIN_JOBS}/{job_id}/retry"), 401, "not_authenticated")
