"""POST /png-info (settings read from a PNG, nothing stored) and POST /jobs/cancel-all (owner-scoped)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.services import Services
from tests.helpers import auth_headers, create_user, drain, png_bytes
from tests.unit.test_pnginfo import png_with

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pnginfo"


def test_png_info_reads_a_generated_image_back_as_params(client: TestClient, services: Services) -> None:
    job = client.post(
        "/api/v1/generations",
        json={"prompt": "a lighthouse", "negative_prompt": "fog", "size": "64x64", "steps": 2, "seed": 77},
    ).json()
    drain(services)
    image_id = client.get(job["urls"]["get"]).json()["outputs"][0]["image_id"]
    png = client.get(f"/api/v1/images/{image_id}/file").content
    r = client.post("/api/v1/png-info", files={"file": ("out.png", png, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "studiolo" and body["unmapped"] == []
    params = body["parameters"]
    got = (params["prompt"], params["negative_prompt"], params["seed"], params["steps"])
    assert got == ("a lighthouse", "fog", 77, 2)
    # What was read is a valid request as it stands.
    again = client.post("/api/v1/generations", json=params)
    assert again.status_code == 202, again.text


def test_png_info_of_a1111_text_and_of_a_plain_png(client: TestClient) -> None:
    text = (FIXTURES / "a1111_parameters.txt").read_text()
    r = client.post("/api/v1/png-info", files={"file": ("a.png", png_with(parameters=text), "image/png")})
    assert r.status_code == 200 and r.json()["source"] == "a1111"
    assert r.json()["parameters"]["seed"] == 1234
    plain = client.post("/api/v1/png-info", files={"file": ("p.png", png_bytes(), "image/png")})
    assert plain.json() == {"source": None, "parameters": {}, "raw": None, "unmapped": []}


def test_png_info_refuses_what_is_not_a_png_with_clear_codes(client: TestClient, settings_factory: object) -> None:
    cases = [
        ({"file": ("x.png", b"GIF89a not really", "image/png")}, 415, "unsupported_media_type"),
        ({"file": ("x.png", b"", "image/png")}, 422, "empty_upload"),
        ({"file": ("x.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")}, 422, "image_corrupt"),
        ({"other": ("x.png", png_bytes(), "image/png")}, 422, "invalid_upload"),
    ]
    for files, status, code in cases:
        r = client.post("/api/v1/png-info", files=files)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    r = client.post("/api/v1/png-info", json={"file": "x"})
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_content_type")


def test_png_info_needs_a_signed_in_caller(api: TestClient) -> None:
    r = api.post("/api/v1/png-info", files={"file": ("p.png", png_bytes(), "image/png")})
    assert r.status_code == 401


def test_cancel_all_cancels_only_the_callers_waiting_jobs(client: TestClient, services: Services) -> None:
    mine = [
        client.post("/api/v1/generations", json={"prompt": f"p{i}", "size": "64x64", "steps": 2}).json()["id"]
        for i in range(3)
    ]
    owner_headers = dict(client.headers)
    other = create_user(services, "other@example.test")
    client.headers.update(auth_headers(services, other))
    theirs = client.post("/api/v1/generations", json={"prompt": "theirs", "size": "64x64", "steps": 2}).json()["id"]
    # Another user's cancel-all touches nothing of the first user's.
    r = client.post("/api/v1/jobs/cancel-all")
    assert r.status_code == 200 and r.json() == {"canceled": [theirs]}
    client.headers.update(owner_headers)
    assert client.get("/api/v1/auth/me").json()["id"] == LOCAL_USER_ID
    assert {client.get(f"/api/v1/jobs/{j}").json()["status"] for j in mine} == {"queued"}

    done = client.post("/api/v1/generations", json={"prompt": "done", "size": "64x64", "steps": 2}).json()["id"]
    client.post(f"/api/v1/jobs/{done}/cancel")
    r = client.post("/api/v1/jobs/cancel-all")
    assert r.status_code == 200
    assert r.json() == {"canceled": sorted(mine, reverse=True)}
    assert {client.get(f"/api/v1/jobs/{j}").json()["status"] for j in mine} == {"canceled"}
    assert drain(services) == 0
    # Nothing left: a second call cancels nothing.
    assert client.post("/api/v1/jobs/cancel-all").json() == {"canceled": []}
