"""The generation HTTP API end to end in-process: submit, run, read, cancel, retry, idempotency, errors."""

from __future__ import annotations

import io
import json
import zlib
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from studiolo.domain.gallery import imaging
from studiolo.services import Services
from tests.helpers import app_with, auth_headers, drain, png_bytes

GEN = "/api/v1/generations"


def _submit(client: TestClient, **body: object) -> dict[str, object]:
    body.setdefault("prompt", "a lighthouse at dusk")
    body.setdefault("size", "64x64")
    body.setdefault("steps", 2)
    r = client.post(GEN, json=body)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def _error(r: object) -> dict[str, object]:
    body = r.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "request_id"}
    assert body["request_id"]
    return body["error"]  # type: ignore[no-any-return]


def test_submit_returns_job_at_once_and_worker_completes_it(client: TestClient, services: Services) -> None:
    r = client.post(
        GEN,
        json={
            "prompt": "a lighthouse at dusk",
            "style": "ghibli",
            "size": "64x64",
            "n": 2,
            "seed": 7,
            "sampler": "euler_a",
        },
    )
    assert r.status_code == 202
    accepted = r.json()
    assert accepted["status"] == "queued"
    assert accepted["queue_position"] == 1
    assert accepted["urls"] == {
        "get": f"/api/v1/jobs/{accepted['id']}",
        "cancel": f"/api/v1/jobs/{accepted['id']}/cancel",
        "events": f"/api/v1/jobs/{accepted['id']}/events",
    }
    assert r.headers["location"] == accepted["urls"]["get"]

    assert drain(services) == 1
    job = client.get(accepted["urls"]["get"]).json()
    assert job["status"] == "succeeded"
    assert job["seeds"] == [7, 8]
    steps = job["params"]["steps"]
    # The echo engine makes both images in one call: image 0 (CONTRACTS.md "Progress").
    assert job["progress"] == {"step": steps, "total": steps, "image": 0, "images": 2}
    assert job["cost"] > 0 and job["duration_seconds"] is not None
    assert set(job["timings"]) == {"queue_wait", "load", "generate", "store"}
    assert job["started_at"] and job["finished_at"]
    assert job["params"]["final_prompt"].startswith("a lighthouse at dusk, studio ghibli style")
    assert [o["seed"] for o in job["outputs"]] == [7, 8]

    png = client.get(job["outputs"][0]["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    parameters, meta = imaging.read_png_metadata(png.content)
    assert parameters is not None and "Seed: 7" in parameters and "Size: 64x64" in parameters
    assert "Sampler: Euler a" in parameters  # A1111's own sampler name, as PNG-info readers expect
    assert meta is not None and meta["job_id"] == job["id"] and meta["style"] == "ghibli"
    thumb = client.get(job["outputs"][0]["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(thumb.content)).format == "WEBP"


def test_list_jobs_filters_by_status(client: TestClient, services: Services) -> None:
    a = _submit(client)
    drain(services)
    b = _submit(client)
    queued = client.get("/api/v1/jobs", params={"status": "queued"}).json()["items"]
    assert [j["id"] for j in queued] == [b["id"]]
    done = client.get("/api/v1/jobs", params={"status": "succeeded"}).json()["items"]
    assert [j["id"] for j in done] == [a["id"]]
    assert _error(client.get("/api/v1/jobs", params={"status": "bogus"}))["code"] == "invalid_status"


def test_job_list_keyset_pagination(client: TestClient) -> None:
    ids = [_submit(client)["id"] for _ in range(5)]
    page1 = client.get("/api/v1/jobs", params={"limit": 2}).json()
    page2 = client.get("/api/v1/jobs", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    page3 = client.get("/api/v1/jobs", params={"limit": 2, "cursor": page2["next_cursor"]}).json()
    seen = [j["id"] for p in (page1, page2, page3) for j in p["items"]]
    assert seen == list(reversed(ids))
    assert page3["next_cursor"] is None


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    body = {"prompt": "same thing", "size": "64x64", "seed": 1}
    first = client.post(GEN, json=body, headers={"Idempotency-Key": "abc-123"})
    second = client.post(GEN, json=body, headers={"Idempotency-Key": "abc-123"})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    other = client.post(GEN, json={**body, "prompt": "different"}, headers={"Idempotency-Key": "abc-123"})
    assert other.status_code == 409 and _error(other)["code"] == "idempotency_key_reused"
    assert len(client.get("/api/v1/jobs").json()["items"]) == 1


def test_cancel_queued_job_is_immediate_and_idempotent(client: TestClient, services: Services) -> None:
    job = _submit(client)
    r1 = client.post(job["urls"]["cancel"])  # type: ignore[index]
    r2 = client.post(job["urls"]["cancel"])  # type: ignore[index]
    assert r1.status_code == r2.status_code == 200
    assert r1.json()["status"] == r2.json()["status"] == "canceled"
    assert drain(services) == 0  # a canceled job is never claimed


def test_retry_requeues_a_canceled_job(client: TestClient, services: Services) -> None:
    job = _submit(client)
    client.post(job["urls"]["cancel"])  # type: ignore[index]
    r = client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    drain(services)
    assert client.get(job["urls"]["get"]).json()["status"] == "succeeded"  # type: ignore[index]
    again = client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert again.status_code == 409 and _error(again)["code"] == "job_not_retryable"


def test_bad_inputs_get_clear_4xx(client: TestClient) -> None:
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"prompt": "   "}, 422, "invalid_input"),
        ({}, 422, "invalid_input"),
        ({"prompt": "x", "width": 100, "height": 64}, 422, "invalid_size"),
        ({"prompt": "x", "width": 64}, 422, "invalid_size"),
        ({"prompt": "x", "size": "64x64", "aspect_ratio": "1:1"}, 422, "invalid_size"),
        ({"prompt": "x", "width": 8192, "height": 8192}, 422, "image_too_large"),
        ({"prompt": "x", "aspect_ratio": "2:1"}, 422, "invalid_input"),
        ({"prompt": "x", "style": "no-such-style"}, 422, "unknown_style"),
        ({"prompt": "x", "n": 9}, 422, "too_many_images"),
        ({"prompt": "x", "n": 0}, 422, "invalid_input"),
        ({"prompt": "x", "seed": -1}, 422, "invalid_input"),
        ({"prompt": "x", "model": "not-installed"}, 409, "model_unavailable"),
        ({"prompt": "x", "unknown_field": 1}, 422, "invalid_input"),
    ]
    for body, status, code in cases:
        r = client.post(GEN, json=body)
        assert r.status_code == status, (body, r.text)
        assert _error(r)["code"] == code, (body, r.text)
    r = client.post(GEN, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and _error(r)["code"] == "invalid_json"
    r = client.post(GEN, content=b"prompt=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and _error(r)["code"] == "unsupported_content_type"
    r = client.post(GEN, content=json.dumps({"prompt": "x" * 2001}), headers={"content-type": "application/json"})
    assert r.status_code == 422 and _error(r)["code"] == "prompt_too_long"


def test_model_unavailable_message_says_how_to_install(client: TestClient) -> None:
    r = client.post(GEN, json={"prompt": "x", "model": "stabilityai/sd-turbo"})
    err = _error(r)
    assert r.status_code == 409 and err["code"] == "model_unavailable"
    assert "studiolo models import" in str(err["message"]) and "studiolo models pull" in str(err["message"])


def test_a_misspelt_model_suggests_the_installed_one(client: TestClient, services: Services) -> None:
    """The API and the CLI give the same "did you mean" (issue 13), never advice to pull the misspelt name."""
    r = client.post(GEN, json={"prompt": "x", "model": "studiolo-dmeo"})
    err = _error(r)
    assert r.status_code == 409 and err["code"] == "model_unavailable"
    message = str(err["message"])
    assert "Did you mean 'studiolo-demo'?" in message and "models pull studiolo-dmeo" not in message
    assert "Installed models: echo, studiolo-demo." in message
    assert err["details"] == {
        "model": "studiolo-dmeo",
        "installed": ["echo", "studiolo-demo"],
        "suggestions": ["studiolo-demo"],
    }
    from studiolo.domain.generation.catalog import unknown_model

    assert message == unknown_model("studiolo-dmeo", services.catalog.ids())[0]  # the CLI prints this message


def test_unknown_ids_are_404_with_envelope(client: TestClient) -> None:
    for method, url in [
        ("get", "/api/v1/jobs/nope"),
        ("post", "/api/v1/jobs/nope/cancel"),
        ("post", "/api/v1/jobs/nope/retry"),
        ("get", "/api/v1/jobs/nope/events"),
        ("get", "/api/v1/images/nope"),
        ("get", "/api/v1/images/nope/file"),
        ("delete", "/api/v1/images/nope"),
        ("get", "/api/v1/collections/nope"),
        ("get", "/api/v1/no-such-route"),
    ]:
        r = client.request(method, url)
        assert r.status_code == 404, (method, url, r.text)
        assert _error(r)["code"].endswith("not_found")  # type: ignore[union-attr]


def test_multipart_img2img_and_inpaint(client: TestClient, services: Services) -> None:
    files = {"init_image": ("in.png", png_bytes((64, 64)), "image/png")}
    r = client.post(GEN, data={"prompt": "repaint it", "size": "64x64", "steps": "2", "strength": "0.5"}, files=files)
    assert r.status_code == 202, r.text
    files2 = {
        "init_image": ("in.png", png_bytes((64, 64)), "image/png"),
        "mask_image": ("mask.png", png_bytes((64, 64), mode="L"), "image/png"),
    }
    r2 = client.post(GEN, data={"params": json.dumps({"prompt": "fill", "size": "64x64", "steps": 2})}, files=files2)
    assert r2.status_code == 202, r2.text
    drain(services)
    j1 = client.get(f"/api/v1/jobs/{r.json()['id']}").json()
    j2 = client.get(f"/api/v1/jobs/{r2.json()['id']}").json()
    assert (j1["kind"], j1["status"]) == ("img2img", "succeeded")
    assert (j2["kind"], j2["status"]) == ("inpaint", "succeeded")


def test_multipart_upload_validation(client: TestClient) -> None:
    # A PNG header that declares 30000x30000 pixels: must be refused before decoding.
    bomb = io.BytesIO()
    Image.new("L", (1, 1)).save(bomb, format="PNG")
    raw = bytearray(bomb.getvalue())
    raw[16:24] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")  # keep the IHDR chunk's CRC valid
    truncated = png_bytes((64, 64))[:-30]
    cases = [
        (bytes(raw), 413, "image_too_large"),
        (truncated, 422, "image_corrupt"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415, "unsupported_media_type"),
        (b"", 422, "empty_upload"),
    ]
    for data, status, code in cases:
        r = client.post(GEN, data={"prompt": "x", "size": "64x64"}, files={"init_image": ("a.png", data, "image/png")})
        assert r.status_code == status, (code, r.text)
        assert _error(r)["code"] == code
    r = client.post(
        GEN, data={"prompt": "x", "kind": "inpaint"}, files={"init_image": ("a.png", png_bytes(), "image/png")}
    )
    assert r.status_code == 422 and _error(r)["code"] == "missing_mask_image"
    r = client.post(
        GEN, data={"prompt": "x", "kind": "bogus"}, files={"init_image": ("a.png", png_bytes(), "image/png")}
    )
    assert r.status_code == 422 and _error(r)["code"] == "invalid_kind"


def test_oversized_body_is_413(client: TestClient, services: Services) -> None:
    limit = 2 * services.settings.max_upload_bytes + 1024 * 1024
    r = client.post(GEN, content=b"x" * (limit + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413 and _error(r)["code"] == "payload_too_large"

    def chunks() -> object:
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    r = client.post(GEN, content=chunks(), headers={"content-type": "application/json"})  # no Content-Length
    assert r.status_code == 413 and _error(r)["code"] == "payload_too_large"


def test_styles_models_stats_health(client: TestClient, services: Services) -> None:
    styles = client.get("/api/v1/styles").json()
    slugs = {s["slug"] for s in styles["styles"]}
    assert {
        "ghibli",
        "photorealistic",
        "pixel-art",
        "cyberpunk",
        "oil-painting",
        "watercolor",
        "anime",
        "3d-render",
        "comic",
        "pencil-sketch",
        "fantasy",
        "cinematic",
    } <= slugs
    assert len(styles["sizes"]) == 8 and {"width": 1024, "height": 1024, "label": "Large square"} in styles["sizes"]
    assert styles["aspect_ratios"] == ["1:1", "16:9", "9:16", "4:3", "3:4"]
    created = client.post(
        "/api/v1/styles", json={"slug": "mine", "name": "Mine", "prompt_template": "{prompt}, in teal"}
    )
    assert created.status_code == 201
    assert client.post("/api/v1/styles", json={"slug": "mine", "name": "x", "prompt_template": "y"}).status_code == 409
    job = _submit(client, style="mine")
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["params"]["final_prompt"] == "a lighthouse at dusk, in teal"
    assert client.delete("/api/v1/styles/mine").status_code == 204

    models = client.get("/api/v1/models").json()
    # The built-in demo model (issue 6) is listed too, but a configured default (echo here) wins over it.
    assert models["default"] == "echo" and [m["id"] for m in models["items"]] == ["echo", "studiolo-demo"]

    drain(services)
    stats = client.get("/api/v1/stats").json()
    assert stats["jobs"]["succeeded"] == 1 and stats["images"] == 1
    assert stats["duration_seconds"]["p50"] is not None

    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["workers"]["alive"] == 0  # no worker started
    services.start_workers(1)
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_queue_positions_are_exact_up_to_the_limit_then_capped(settings_factory: Any) -> None:
    """Positions are counted no further than STUDIOLO_QUEUE_POSITION_LIMIT (each count reads the rows it counts):
    a job further back shows the limit with queue_position_capped, in submits, batches, job views and events."""
    with app_with(settings_factory, queue_position_limit=3) as (svc, api):
        api.headers.update(auth_headers(svc))
        body = {"prompt": "a lighthouse at dusk", "size": "64x64", "steps": 1}

        def places(jobs: list[dict[str, Any]]) -> list[tuple[int | None, bool]]:
            return [(j["queue_position"], j["queue_position_capped"]) for j in jobs]

        singles = [api.post(GEN, json=body).json() for _ in range(4)]
        assert places(singles) == [(1, False), (2, False), (3, False), (3, True)]
        r = api.post(f"{GEN}/batch", json={"generations": [body, {**body, "priority": 1}, body]})
        assert r.status_code == 202, r.text
        batch = r.json()["jobs"]
        # The priority-1 item goes ahead of everything; the others are 6th and 7th.
        assert places(batch) == [(3, True), (1, False), (3, True)]
        views = [api.get(j["urls"]["get"]).json() for j in [*singles, *batch]]
        assert places(views) == [(2, False), (3, False), (3, True), (3, True), (3, True), (1, False), (3, True)]

        last = batch[2]["id"]
        assert api.post(f"/api/v1/jobs/{last}/cancel").json()["queue_position"] is None
        heard: list[dict[str, Any]] = []
        svc.events.subscribe(last, heard.append)
        retried = api.post(f"/api/v1/jobs/{last}/retry").json()
        assert (retried["queue_position"], retried["queue_position_capped"]) == (3, True)
        assert {"type": "queued", "position": 3, "capped": True} in heard

        assert drain(svc) == 7
        assert places([api.get(j["urls"]["get"]).json() for j in singles]) == [(None, False)] * 4
