"""Webhook delivery (issue 18): retries on the schedule with the same webhook-id, 410 disabling an endpoint, a
receiver that is down, a claim whose deliverer died, the SSRF guard at submission and at delivery, and an endpoint
failing for the whole retry window being disabled with a mail to its owner."""

# The shared fixtures are imported by name (pytest finds them so); their parameters re-use those names.
# ruff: noqa: F811
from __future__ import annotations

import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.domain.accounts.mail import Mail
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.domain.webhooks.deliverer import Deliverer, retry_delay
from studiolo.errors import InvalidInput
from studiolo.services import Services
from tests.helpers import drain, submit
from tests.integration.webhook_fixtures import FakeClock, clock, deliverer, hook, receiver, settings  # noqa: F401
from tests.webhook_receiver import Receiver

EP = "/api/v1/webhooks/endpoints"


def endpoint(client: TestClient, hook: Receiver, url: str, **body: Any) -> dict[str, Any]:
    made: dict[str, Any] = client.post(EP, json={"url": url, **body}).json()
    hook.secrets.append(client.get(f"{EP}/{made['id']}/secret").json()["secret"])
    return made


def messages(client: TestClient, endpoint_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get(f"{EP}/{endpoint_id}/messages").json()["data"]
    return found


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/down"


def test_the_schedule() -> None:
    """Immediately, 5 s, 5 min, ... with ±20 % jitter, and nothing past the retry window."""
    import random

    rng = random.Random(1)
    assert retry_delay(0, 24, rng) == 0
    assert 4 <= (retry_delay(1, 24, rng) or 0) <= 6 and 240 <= (retry_delay(2, 24, rng) or 0) <= 360
    assert retry_delay(5, 24, rng) is not None and retry_delay(7, 24, rng) is None  # 5+300+...+36000 s > 24 h
    assert retry_delay(10, 1000, rng) is None


def test_a_500_is_retried_with_the_same_id_and_a_new_timestamp(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer, clock: FakeClock
) -> None:
    made = endpoint(client, hook, hook.url + "/retry", events=["job.succeeded"])
    hook.answers += [500]
    submit(services)
    drain(services)
    deliverer.run_once()
    clock.advance(3)
    assert deliverer.run_once() == 0  # not due yet (5 s ± 20 %)
    clock.advance(4)
    assert deliverer.run_once() == 1
    first, second = hook.wait(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) >= 7
    assert second.payload and second.by_hand and second.payload["type"] == "job.succeeded"
    log = messages(client, made["id"])
    assert log[0]["status"] == "succeeded" and log[0]["attempts"] == 2


def test_410_disables_the_endpoint(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer
) -> None:
    made = endpoint(client, hook, hook.url + "/gone")
    hook.answers += [410]
    client.post(f"{EP}/{made['id']}/test")
    deliverer.run_once()
    view = client.get(f"{EP}/{made['id']}").json()
    assert view["enabled"] is False and view["disabled_reason"] == "gone"
    assert messages(client, made["id"])[0]["status"] == "failed"
    assert client.post(f"/api/v1/webhooks/messages/{messages(client, made['id'])[0]['id']}/resend").status_code == 422


def test_a_receiver_that_is_down_is_retried_and_a_fixed_url_gets_it(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer, clock: FakeClock
) -> None:
    made = endpoint(client, hook, closed_port_url())
    client.post(f"{EP}/{made['id']}/test")
    deliverer.run_once()
    log = messages(client, made["id"])
    assert log[0]["status"] == "pending" and log[0]["last_error"] == "connection_failed"
    client.patch(f"{EP}/{made['id']}", json={"url": hook.url + "/back"})
    clock.advance(7)
    deliverer.run_once()
    assert hook.wait(1)[0].path == "/back"
    assert messages(client, made["id"])[0]["status"] == "succeeded"


def test_an_abandoned_claim_is_delivered_after_its_lease(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer, clock: FakeClock
) -> None:
    """A deliverer claims a message and dies before sending: another one sends it once the lease passes."""
    endpoint(client, hook, hook.url + "/lease")
    client.post(f"{EP}/{endpoint(client, hook, hook.url + '/lease')['id']}/test")
    dead = services.build_deliverer(clock=clock)
    assert len(dead.claim()) == 1
    dead.stop()
    assert deliverer.run_once() == 0  # still leased
    clock.advance(121)
    assert deliverer.run_once() == 1
    assert hook.wait(1)[0].path == "/lease" and hook.deliveries[0].payload


def test_an_endpoint_failing_for_the_whole_window_is_disabled_and_its_owner_mailed(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer, clock: FakeClock
) -> None:
    sent: list[Mail] = []
    services.outbox.send = sent.append  # type: ignore[method-assign]  # the mail itself, not its SMTP delivery
    made = endpoint(client, hook, closed_port_url())
    client.post(f"{EP}/{made['id']}/test")
    for _ in range(30):  # hourly rounds: the retries (5 s ... 10 h) run out within the 24 h window
        deliverer.run_once()
        clock.advance(3600)
    view = client.get(f"{EP}/{made['id']}").json()
    assert view["enabled"] is False and view["disabled_reason"] == "failing"
    assert messages(client, made["id"])[0]["status"] == "failed"
    assert [m.kind for m in sent] == ["webhook_disabled"] and made["url"] in sent[0].text


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:9/x", "webhook_url_forbidden"),
        ("http://10.1.2.3/x", "webhook_url_forbidden"),
        ("http://169.254.169.254/latest/meta-data", "webhook_url_forbidden"),
        ("http://[::1]/x", "webhook_url_forbidden"),
        ("http://localhost./x", "webhook_url_forbidden"),
        ("https://u:p@example.com/x", "invalid_webhook_url"),
    ],
)
def test_private_urls_are_refused_at_submission(services: Services, client: TestClient, url: str, code: str) -> None:
    services.settings.webhooks_allow_private = False
    with pytest.raises(InvalidInput) as refused:
        services.generation.submit("local", GenerationParams(prompt="x", size="64x64", webhook=url))
    assert refused.value.code == code
    r = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "webhook": url})
    assert r.status_code == 422 and r.json()["error"]["code"] == code
    r = client.post(EP, json={"url": url})
    assert r.status_code == 422 and r.json()["error"]["code"] == code


def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(
    client: TestClient, services: Services, hook: Receiver, deliverer: Deliverer
) -> None:
    """The URL names a host, not an address: only the send-time lookup sees it is loopback."""
    made = endpoint(client, hook, hook.url.replace("127.0.0.1", "localhost") + "/x")
    services.settings.webhooks_allow_private = False
    client.post(f"{EP}/{made['id']}/test")
    deliverer.run_once()
    assert hook.deliveries == []
    assert messages(client, made["id"])[0]["last_error"] == "address_forbidden"
