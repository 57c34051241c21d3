"""POST /api/v1/generations/batch: many txt2img jobs in one request, queued all together or not at all, counted
item by item against the generation rate limit, idempotent as a whole."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.services import Services
from tests.helpers import app_with, auth_headers, create_user, drain, job_count

if TYPE_CHECKING:  # the TestClient's responses (Starlette's test client runs on httpx2)
    from httpx2 import Response

BATCH = "/api/v1/generations/batch"
GEN = "/api/v1/generations"


def item(prompt: str = "a lighthouse at dusk", **params: Any) -> dict[str, Any]:
    return {"prompt": prompt, "size": "64x64", "steps": 2, **params}


def batch(*items: dict[str, Any]) -> dict[str, Any]:
    return {"generations": list(items)}


def error(r: Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "request_id"} and body["error"]["code"] == code, body
    details: dict[str, Any] = body["error"]["details"]
    return details


def test_a_batch_queues_every_item_in_order_and_each_runs_as_asked(client: TestClient, services: Services) -> None:
    waiting = client.post(GEN, json=item("already waiting")).json()
    items = [
        item("a red fox", n=1, seed=11, tags=["fox"]),
        item("a blue whale", n=2, seed=22, priority=5, tags=["sea"]),
        item("a green frog", n=3, seed=33, style="ghibli"),
    ]
    r = client.post(BATCH, json=batch(*items))
    assert r.status_code == 202, r.text
    assert "idempotent-replayed" not in r.headers
    jobs = r.json()["jobs"]
    assert [j["status"] for j in jobs] == ["queued"] * 3
    assert len({j["id"] for j in jobs}) == 3
    assert all(j["urls"]["get"] == f"/api/v1/jobs/{j['id']}" for j in jobs)
    # The whale (priority 5) goes first; then, at priority 0, the job already waiting, the fox, the frog.
    assert [j["queue_position"] for j in jobs] == [3, 1, 4]
    for accepted in jobs:  # what each job's own page reports (counted another way) agrees
        assert client.get(accepted["urls"]["get"]).json()["queue_position"] == accepted["queue_position"]
    assert client.get(waiting["urls"]["get"]).json()["queue_position"] == 2

    assert drain(services) == 4
    for accepted, asked in zip(jobs, items, strict=True):
        job = client.get(accepted["urls"]["get"]).json()
        assert job["status"] == "succeeded", job
        assert job["params"]["prompt"] == asked["prompt"] and job["priority"] == asked.get("priority", 0)
        assert job["seeds"] == [asked["seed"] + k for k in range(asked["n"])]
        assert [o["seed"] for o in job["outputs"]] == job["seeds"]
        for output in job["outputs"]:
            image = client.get(f"/api/v1/images/{output['image_id']}").json()
            assert (image["job_id"], image["prompt"], image["tags"]) == (
                job["id"],
                asked["prompt"],
                asked.get("tags", []),
            )
        with services.db.session() as session:
            owners = session.scalars(select(Image.owner_id).where(Image.job_id == job["id"])).all()
        assert owners == [LOCAL_USER_ID] * asked["n"]
    frog = client.get(jobs[2]["urls"]["get"]).json()
    assert frog["params"]["final_prompt"].startswith("a green frog, studio ghibli style")


def test_a_validation_error_names_the_item_and_nothing_is_queued(client: TestClient, services: Services) -> None:
    items = [item("one"), item("two"), item("three"), {"size": "64x64"}, item("five", n=0)]
    details = error(client.post(BATCH, json=batch(*items)), 422, "invalid_input")
    locs = [e["loc"] for e in details["errors"]]
    assert locs == [["body", "generations", "3", "prompt"], ["body", "generations", "4", "n"]]
    assert job_count(services) == 0


def test_a_refused_item_keeps_its_error_names_its_index_and_nothing_is_queued(
    client: TestClient, services: Services
) -> None:
    r = client.post(BATCH, json=batch(item("one"), item("two"), item("three", model="not-installed"), item("four")))
    assert error(r, 409, "model_unavailable")["index"] == 2
    r = client.post(BATCH, json=batch(item("huge", size=None, width=8192, height=8192), item("fine")))
    details = error(r, 422, "image_too_large")
    assert details["index"] == 0 and details["width"] == 8192  # the item's own details are kept
    r = client.post(BATCH, json=batch(item("fine"), item("unknown style", style="no-such-style")))
    assert error(r, 422, "unknown_style") == {"style": "no-such-style", "index": 1}
    assert job_count(services) == 0
    assert drain(services) == 0


def test_empty_and_oversized_batches_are_refused(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, max_batch_submissions=3) as (svc, api):
        api.headers.update(auth_headers(svc))
        assert error(api.post(BATCH, json=batch(*[item()] * 4)), 422, "too_many_generations") == {"limit": 3}
        # The cap is checked before the items: four broken ones still get too_many_generations.
        assert error(api.post(BATCH, json=batch(*[{}] * 4)), 422, "too_many_generations") == {"limit": 3}
        details = error(api.post(BATCH, json=batch()), 422, "invalid_input")
        assert details["errors"][0]["loc"] == ["body", "generations"]
        error(api.post(BATCH, json={}), 422, "invalid_input")
        error(api.post(BATCH, json={**batch(item()), "priority": 1}), 422, "invalid_input")
        error(api.post(BATCH, json=[item()]), 422, "invalid_input")
        assert job_count(svc) == 0
        assert api.post(BATCH, json=batch(*[item()] * 3)).status_code == 202
        assert job_count(svc) == 3


def test_only_json_bodies_are_accepted(client: TestClient, services: Services) -> None:
    r = client.post(BATCH, content=b"generations=x", headers={"content-type": "text/plain"})
    error(r, 415, "unsupported_content_type")
    error(client.post(BATCH, data={"prompt": "x"}), 415, "unsupported_content_type")
    r = client.post(BATCH, content=b'{"generations": [', headers={"content-type": "application/json"})
    error(r, 422, "invalid_json")
    r = client.post(BATCH, content=b"", headers={"content-type": "application/json"})
    error(r, 422, "invalid_input")
    assert job_count(services) == 0


def test_a_batch_counts_as_its_items_against_the_rate_limit(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, rate_limits_enabled=True, rate_limit_generate="100/hour;3/minute") as (svc, api):
        api.headers.update(auth_headers(svc))
        # Over the smallest limit it could never pass: a 422 saying so, not a 429, and nothing is counted.
        assert error(api.post(BATCH, json=batch(*[item()] * 4)), 422, "batch_exceeds_rate_limit") == {"limit": 3}
        assert api.post(GEN, json=item()).status_code == 202
        # Two submissions are left: a batch of three is refused whole, and uses none of them up.
        refused = api.post(BATCH, json=batch(*[item()] * 3))
        assert error(refused, 429, "rate_limited")["retry_after"] >= 1
        assert int(refused.headers["retry-after"]) >= 1
        assert api.post(BATCH, json=batch(item(), item())).status_code == 202
        error(api.post(GEN, json=item()), 429, "rate_limited")
        error(api.post(BATCH, json=batch(item())), 429, "rate_limited")
        assert job_count(svc) == 3


def test_batches_are_not_rate_limited_when_limits_are_off(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, rate_limit_generate="1/minute", max_batch_submissions=5) as (svc, api):
        api.headers.update(auth_headers(svc))
        assert api.post(BATCH, json=batch(*[item()] * 5)).status_code == 202


def test_idempotency_key_covers_the_whole_batch(client: TestClient, services: Services) -> None:
    body = batch(item("one", seed=1), item("two", seed=2), item("three", seed=3))
    key = {"Idempotency-Key": "nightly-run-42"}
    first = client.post(BATCH, json=body, headers=key)
    again = client.post(BATCH, json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in first.json()["jobs"]]
    assert again.json() == first.json()  # still queued, at the same positions

    for other in (batch(item("one", seed=1), item("two", seed=2)), batch(*body["generations"][::-1])):
        details = error(client.post(BATCH, json=other, headers=key), 409, "idempotency_key_reused")
        assert details["job_id"] in {j["id"] for j in first.json()["jobs"]}

    # The same key on the single endpoint is another request's key: a new job, not a replay and not a conflict.
    single = client.post(GEN, json=item("one", seed=1), headers=key)
    assert single.status_code == 202 and "idempotent-replayed" not in single.headers
    assert single.json()["id"] not in {j["id"] for j in first.json()["jobs"]}
    assert client.post(GEN, json=item("one", seed=1), headers=key).json()["id"] == single.json()["id"]
    assert job_count(services) == 4

    error(client.post(BATCH, json=body, headers={"Idempotency-Key": "k" * 201}), 422, "invalid_idempotency_key")
    assert drain(services) == 4
    replayed = client.post(BATCH, json=body, headers=key)
    assert replayed.status_code == 202 and replayed.headers["idempotent-replayed"] == "true"
    assert [j["status"] for j in replayed.json()["jobs"]] == ["succeeded"] * 3


def test_identical_batches_racing_with_one_key_queue_once(services: Services) -> None:
    items = [GenerationParams(prompt=f"race {i}", size="64x64", steps=2) for i in range(5)]
    start = threading.Barrier(4)
    results: list[tuple[list[str], bool]] = []

    def send() -> None:
        start.wait()
        accepted, created = services.generation.submit_batch(LOCAL_USER_ID, items, idempotency_key="race")
        results.append(([j.id for j in accepted.jobs], created))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert len({tuple(ids) for ids, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert job_count(services) == 5


def test_a_read_only_api_key_cannot_submit_a_batch(api: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com", password="velvet-harbor-1937")
    session = auth_headers(services, alice)
    keys = {}
    for scopes in (["read"], ["generate"]):
        r = api.post("/api/v1/api-keys", json={"name": "script", "scopes": scopes}, headers=session)
        assert r.status_code == 201, r.text
        keys[scopes[0]] = {"Authorization": f"Bearer {r.json()['key']}"}
    error(api.post(BATCH, json=batch(item()), headers=keys["read"]), 403, "insufficient_scope")
    assert job_count(services) == 0
    r = api.post(BATCH, json=batch(item(), item()), headers=keys["generate"])
    assert r.status_code == 202
    jobs = [api.get(j["urls"]["get"], headers=session).json() for j in r.json()["jobs"]]
    assert [j["status"] for j in jobs] == ["queued", "queued"]


def test_another_user_cannot_see_the_batchs_jobs(client: TestClient, services: Services) -> None:
    jobs = client.post(BATCH, json=batch(item("mine"), item("mine too"))).json()["jobs"]
    intruder = auth_headers(services, create_user(services, "intruder@example.test"))
    for job in jobs:
        for method, url in (("get", job["urls"]["get"]), ("post", job["urls"]["cancel"])):
            assert error(client.request(method, url, headers=intruder), 404, "job_not_found") == {}
    assert client.get("/api/v1/jobs", headers=intruder).json()["items"] == []
    assert [client.get(j["urls"]["get"]).json()["status"] for j in jobs] == ["queued", "queued"]
