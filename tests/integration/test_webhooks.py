"""Webhooks (issue 18, docs/webhooks.md): the endpoints API and its ownership, per-job webhooks end to end with the
echo engine, event filters, the spec's test vector, secret rotation, the delivery log and resend."""

# The shared fixtures are imported by name (pytest finds them so); their parameters re-use those names.
# ruff: noqa: F811
from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from studiolo.domain.generation.models import Job
from studiolo.domain.webhooks.deliverer import Deliverer
from studiolo.domain.webhooks.signing import sign
from studiolo.services import Services
from tests.helpers import auth_headers, create_user, drain, submit
from tests.integration.webhook_fixtures import FakeClock, clock, deliverer, hook, receiver, settings  # noqa: F401
from tests.webhook_receiver import Receiver, spec_verify

EP = "/api/v1/webhooks/endpoints"


def test_the_spec_test_vector() -> None:
    """The signature the standardwebhooks package's own tests expect for this id, timestamp, body and secret."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    made = Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", datetime.fromtimestamp(1614265330), body)
    assert made == expected


def create_endpoint(client: TestClient, url: str, **body: Any) -> dict[str, Any]:
    r = client.post(EP, json={"url": url, **body})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def test_endpoint_crud_and_ownership(client: TestClient, api: TestClient, services: Services, hook: Receiver) -> None:
    made = create_endpoint(client, hook.url + "/a", description="mine", events=["start", "completed"])
    assert made["events"] == ["job.started", "job.succeeded", "job.failed", "job.canceled"]  # Replicate's names
    assert made["enabled"] and "secret" not in made
    secret = client.get(f"{EP}/{made['id']}/secret").json()["secret"]
    assert secret.startswith("whsec_") and len(secret) == 50
    r = client.patch(f"{EP}/{made['id']}", json={"enabled": False, "description": "paused"})
    assert r.json()["enabled"] is False and r.json()["disabled_reason"] == "disabled_by_user"
    assert [e["id"] for e in client.get(EP).json()["data"]] == [made["id"]]

    bob = create_user(services, "bob@example.com")
    as_bob = auth_headers(services, bob)
    assert api.get(EP, headers=as_bob).json() == {"data": []}
    for method, path in [
        ("GET", f"{EP}/{made['id']}"),
        ("PATCH", f"{EP}/{made['id']}"),
        ("DELETE", f"{EP}/{made['id']}"),
        ("GET", f"{EP}/{made['id']}/secret"),
        ("POST", f"{EP}/{made['id']}/secret/rotate"),
        ("POST", f"{EP}/{made['id']}/test"),
        ("GET", f"{EP}/{made['id']}/messages"),
    ]:
        r = api.request(method, path, json={} if method in ("PATCH",) else None, headers=as_bob)
        assert r.status_code == 404 and r.json()["error"]["code"] == "webhook_endpoint_not_found", (method, path)

    assert client.delete(f"{EP}/{made['id']}").status_code == 204
    assert client.get(f"{EP}/{made['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://example.com/x"}, "invalid_webhook_url"),
        ({"url": "https://user:pw@example.com/x"}, "invalid_webhook_url"),
        ({"url": "https://example.com/x", "events": ["job.exploded"]}, "invalid_webhook_event"),
        ({"url": "https://example.com/x", "api_key_id": "00000000-0000-7000-8000-00000000dead"}, "api_key_not_found"),
    ],
)
def test_bad_endpoints_are_refused(client: TestClient, body: dict[str, Any], code: str) -> None:
    r = client.post(EP, json=body)
    assert r.status_code in (404, 422) and r.json()["error"]["code"] == code


def job_secret(client: TestClient) -> str:
    secret: str = client.get("/api/v1/webhooks/secret").json()["secret"]
    return secret


def test_a_per_job_webhook_end_to_end(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer
) -> None:
    """job.started and job.succeeded reach the job's URL, signed with the account secret (both verifiers agree),
    and the output link in the payload fetches the image without credentials."""
    hook.secrets.append(job_secret(client))
    job_id = submit(services, webhook=hook.url + "/job?ref=42", n=2)
    with services.db.session() as session:
        assert session.get_one(Job, job_id).webhook_state == "queued"
    drain(services)
    assert deliverer.run_once() == 2
    got = hook.wait(2)
    assert [d.payload["type"] for d in got if d.payload] == ["job.started", "job.succeeded"]
    assert all(d.by_hand for d in got) and got[0].path == "/job"
    assert got[0].headers["user-agent"].startswith("Studiolo-Webhooks/")
    assert got[0].headers["webhook-id"] != got[1].headers["webhook-id"]
    data = got[1].payload["data"] if got[1].payload else {}
    assert data["id"] == job_id and data["status"] == "succeeded" and data["error"] is None
    assert data["completed_at"] and data["started_at"] and len(data["outputs"]) == 2
    link = urlsplit(data["outputs"][0]["url"])
    r = TestClient(client.app).get(f"{link.path}?{link.query}")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert deliverer.run_once() == 0  # nothing is sent twice
    with services.db.session() as session:
        assert session.get_one(Job, job_id).webhook_state == "succeeded"


def test_filters_and_endpoint_receivers(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer
) -> None:
    """A per-job filter in Replicate's names, an account endpoint wanting only failures, and one for another API
    key's jobs: each receives exactly what it asked for."""
    hook.secrets.append(job_secret(client))
    failures = create_endpoint(client, hook.url + "/failures", events=["job.failed"])
    key = client.post("/api/v1/api-keys", json={"name": "k", "scopes": ["read", "generate"]}).json()
    create_endpoint(client, hook.url + "/other-key", api_key_id=key["id"])
    hook.secrets.append(client.get(f"{EP}/{failures['id']}/secret").json()["secret"])
    submit(services, webhook=hook.url + "/job", webhook_events_filter=["completed"])
    drain(services)
    deliverer.run_once()
    got = hook.wait(1)
    assert [(d.path, d.payload["type"] if d.payload else None) for d in got] == [("/job", "job.succeeded")]


def test_a_test_event_the_log_and_resend(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer, clock: FakeClock
) -> None:
    made = create_endpoint(client, hook.url + "/log")
    hook.secrets.append(client.get(f"{EP}/{made['id']}/secret").json()["secret"])
    hook.answers += [500]
    r = client.post(f"{EP}/{made['id']}/test")
    assert r.status_code == 202 and r.json()["event_type"] == "webhook.test"
    deliverer.run_once()
    log = client.get(f"{EP}/{made['id']}/messages").json()["data"]
    assert len(log) == 1 and log[0]["status"] == "pending" and log[0]["last_status_code"] == 500
    assert log[0]["attempt_log"][0]["status_code"] == 500
    assert len(log[0]["attempt_log"][0]["response_body"]) == 1024  # cut to 1 KB
    assert client.get(f"{EP}/{made['id']}/messages", params={"status": "failed"}).json() == {"data": []}
    r = client.post(f"/api/v1/webhooks/messages/{log[0]['id']}/resend")
    assert r.status_code == 202 and r.json()["attempts"] == 0
    deliverer.run_once()
    log = client.get(f"{EP}/{made['id']}/messages").json()["data"]
    assert log[0]["status"] == "succeeded" and [a["status_code"] for a in log[0]["attempt_log"]] == [500, 200]
    got = hook.wait(2)
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"] == log[0]["id"]
    assert all(d.payload and d.by_hand for d in got)
    assert client.post("/api/v1/webhooks/messages/msg_nope/resend").status_code == 404


def test_rotation_signs_with_both_secrets(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer, clock: FakeClock
) -> None:
    made = create_endpoint(client, hook.url + "/rot")
    old = client.get(f"{EP}/{made['id']}/secret").json()["secret"]
    rotated = client.post(f"{EP}/{made['id']}/secret/rotate").json()
    assert rotated["secret"] != old and rotated["previous_expires_at"]
    client.post(f"{EP}/{made['id']}/test")
    deliverer.run_once()
    delivery = hook.wait(1)[0]
    entries = delivery.headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    for secret in (old, rotated["secret"]):  # each alone verifies, with both verifiers
        assert spec_verify(secret, delivery.headers, delivery.body)
        assert Webhook(secret).verify(delivery.body, delivery.headers)["type"] == "webhook.test"
    clock.advance(services.settings.webhook_secret_grace_hours * 3600 + 1)
    assert client.get(f"{EP}/{made['id']}/secret").json()["previous_expires_at"] is None
    secret_now = json.loads(client.get(f"{EP}/{made['id']}/secret").text)["secret"]
    assert secret_now == rotated["secret"]


def test_the_account_secret_is_made_once_and_rotates(client: TestClient) -> None:
    first = job_secret(client)
    assert job_secret(client) == first
    rotated = client.post("/api/v1/webhooks/secret/rotate").json()
    assert rotated["secret"] != first and rotated["previous_expires_at"]
    assert job_secret(client) == rotated["secret"]
