"""Issue 18 core: signed image links, the compatible faces' error shapes and Basic auth, and the job follower.

Signed links are what OpenAI's response_format=url and webhook payloads hand out: a genuine link serves the file to
anyone without credentials until it expires; a forged, expired or someone else's link does not; a trashed image's
link stops working.
"""

from __future__ import annotations

import asyncio
import base64
import time
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient

from studiolo.compat.jobs import JobStillRunning, follow_job, read_outputs, wait_for_job
from studiolo.domain.accounts.authn import LOCAL_USER_ID
from studiolo.domain.gallery.links import signed_image_path, signed_image_url
from studiolo.domain.gallery.service import FILE_SIZES
from studiolo.services import Services
from tests.helpers import create_user, drain, submit


def _one_image(services: Services, owner: str = LOCAL_USER_ID) -> str:
    job_id = submit(services, owner)
    drain(services)
    view = services.generation.get(owner, job_id)
    assert view.status == "succeeded"
    return view.outputs[0].image_id


def test_a_signed_link_serves_the_file_without_credentials_until_it_expires(
    client: TestClient, api: TestClient, services: Services
) -> None:
    image_id = _one_image(services)
    original = client.get(f"/api/v1/images/{image_id}/file").content
    url = signed_image_url(services.settings, services.codec, LOCAL_USER_ID, image_id, request_base="http://testserver")
    assert url.startswith("http://testserver/api/v1/links/images/")
    got = api.get(url)  # anonymous
    assert got.status_code == 200 and got.content == original
    assert got.headers["content-type"] == "image/png"

    expired = signed_image_path(services.codec, LOCAL_USER_ID, image_id, ttl=-10)
    refused = api.get(expired)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "link_expired"


def test_forged_and_foreign_links_are_refused_alike(api: TestClient, services: Services) -> None:
    image_id = _one_image(services)
    path = signed_image_path(services.codec, LOCAL_USER_ID, image_id, ttl=600)
    query = parse_qs(urlsplit(path).query)
    forged = path.replace(query["signature"][0], "0" * 64)
    other = create_user(services, "mallory@example.com")
    as_other = signed_image_path(services.codec, other, image_id, ttl=600)  # signed for someone else's id
    resized = path.replace("size=original", f"size={FILE_SIZES[1]}")  # the size is part of what is signed
    missing = signed_image_path(services.codec, LOCAL_USER_ID, "no-such-image", ttl=600)
    for link in (forged, as_other, resized, missing):
        answer = api.get(link)
        assert answer.status_code == 404, link
        assert answer.json()["error"]["code"] == "link_invalid"


def test_a_trashed_image_link_stops_working(client: TestClient, api: TestClient, services: Services) -> None:
    image_id = _one_image(services)
    path = signed_image_path(services.codec, LOCAL_USER_ID, image_id, ttl=600)
    assert api.get(path).status_code == 200
    assert client.delete(f"/api/v1/images/{image_id}").status_code == 204
    assert api.get(path).status_code == 404


def test_faces_answer_errors_in_their_clients_shapes(api: TestClient) -> None:
    openai = api.get("/v1/no-such-route", headers={"Authorization": "Bearer ais_wrong"})
    assert openai.status_code == 404
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
    a1111 = api.get("/sdapi/v1/no-such-route")
    assert a1111.status_code == 404
    assert set(a1111.json()) == {"error", "detail", "body", "errors"}
    native = api.get("/api/v1/no-such-route")
    assert set(native.json()) == {"error", "request_id"}


def test_basic_auth_with_an_api_key_is_taken_only_under_sdapi(client: TestClient, api: TestClient) -> None:
    created = client.post("/api/v1/api-keys", json={"name": "a1111"})
    assert created.status_code == 201, created.text
    secret = created.json()["key"]
    basic = {"Authorization": "Basic " + base64.b64encode(f"webui:{secret}".encode()).decode()}
    # Under the native API, Basic is not a scheme Studiolo takes.
    native = api.get("/api/v1/jobs", headers=basic)
    assert native.status_code == 401 and native.json()["error"]["code"] == "invalid_token"
    broken = {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}
    refused = api.get("/sdapi/v1/no-such-route", headers=broken)
    assert refused.status_code in (401, 404)


def test_follow_job_ends_with_the_stored_view_and_its_outputs(services: Services) -> None:
    job_id = submit(services)

    async def follow() -> list[dict[str, object]]:
        events = []
        async for event in follow_job(services, LOCAL_USER_ID, job_id, types={"progress"}):
            events.append(event)
        return events

    async def run() -> list[dict[str, object]]:
        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        await asyncio.to_thread(drain, services)
        return await task

    events = asyncio.run(run())
    assert [e["type"] for e in events][-1] == "succeeded"
    assert {e["type"] for e in events[:-1]} <= {"progress"}  # only the types asked for, then the end
    view = services.generation.get(LOCAL_USER_ID, job_id)
    outputs = read_outputs(services, LOCAL_USER_ID, view)
    assert len(outputs) == 1 and outputs[0].png.startswith(b"\x89PNG")


def test_a_wait_that_ends_before_the_job_says_so_and_leaves_it_queued(services: Services) -> None:
    job_id = submit(services)
    started = time.monotonic()
    try:
        asyncio.run(wait_for_job(services, LOCAL_USER_ID, job_id, wait_seconds=0.2))
    except JobStillRunning as exc:
        assert exc.status_code == 504 and exc.details["job_id"] == job_id
    else:
        raise AssertionError("the wait should have ended first")
    assert time.monotonic() - started < 5
    assert services.generation.get(LOCAL_USER_ID, job_id).status == "queued"
