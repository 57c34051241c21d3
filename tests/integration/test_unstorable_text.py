"""Text a database cannot store (NUL, unpaired surrogates) is refused with 422 invalid_input before any query, the
same on SQLite and PostgreSQL (text_guard.py). Before, PostgreSQL answered these with a 500 (psycopg refuses NUL in
text parameters) while SQLite stored or looked up the NUL. Found by the signed-in fuzz (test_fuzz.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.services import Services
from tests.helpers import drain, png_bytes

PATHS = [
    ("GET", "/api/v1/jobs/a%00b"),
    ("POST", "/api/v1/jobs/%00/cancel"),
    ("GET", "/api/v1/jobs/%00/events"),
    ("GET", "/api/v1/images/a%00b"),
    ("GET", "/api/v1/images/a%00b/file"),
    ("DELETE", "/api/v1/styles/%00"),
    ("GET", "/api/v1/collections/x%00"),
    ("DELETE", "/api/v1/auth/sessions/%00"),
    ("GET", "/api/v1/admin/users/%00"),
    ("GET", "/static/a%00b.css"),
]

QUERIES = [
    "/api/v1/images?model=%00",
    "/api/v1/images?style=a%00&starred=true",
    "/api/v1/images?cursor=%00",
    "/api/v1/images?collection=%00",
    "/api/v1/images?q=fox%00",
    "/api/v1/jobs?cursor=%00",
    "/api/v1/collections?cursor=%00",
    "/api/v1/admin/users?q=%00",
    "/api/v1/admin/audit?actor_id=%00",
    "/api/v1/admin/audit?cursor=%00",
]

# Raw JSON: a \u0000 escape decodes to NUL, \ud800 alone to an unpaired surrogate.
BODIES = [
    ("POST", "/api/v1/styles", '{"slug": "s", "name": "n", "prompt_template": "\\u0000"}'),  # the fuzz's find
    ("POST", "/api/v1/styles", '{"slug": "s", "name": "n", "prompt_template": "x\\ud800"}'),
    ("POST", "/api/v1/collections", '{"name": "a\\u0000b"}'),
    ("POST", "/api/v1/generations", '{"prompt": "a lighthouse\\u0000", "size": "64x64"}'),
    ("POST", "/api/v1/generations", '{"prompt": "x", "tags": ["\\udc00"]}'),
    ("PATCH", "/api/v1/auth/me", '{"display_name": "\\u0000"}'),
    ("POST", "/api/v1/api-keys", '{"name": "k\\u0000"}'),
    ("POST", "/api/v1/images/bulk", '{"action": "star", "image_ids": ["\\u0000"]}'),
    ("POST", "/api/v1/auth/login", '{"email": "a\\u0000@example.com", "password": "correct horse"}'),
    ("POST", "/api/v1/auth/register", '{"email": "a@example.com", "password": "correct horse \\u0000"}'),
]


def _refused(r: Any, location: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["message"].startswith(f"Text in the {location} cannot contain NUL"), error


@pytest.mark.parametrize(("method", "url"), PATHS)
def test_nul_in_a_path_is_refused(client: TestClient, method: str, url: str) -> None:
    _refused(client.request(method, url), "request path")


@pytest.mark.parametrize("url", QUERIES)
def test_nul_in_a_query_string_is_refused(client: TestClient, url: str) -> None:
    _refused(client.get(url), "query string")


@pytest.mark.parametrize(("method", "url", "body"), BODIES)
def test_unstorable_text_in_a_json_body_is_refused(client: TestClient, method: str, url: str, body: str) -> None:
    _refused(client.request(method, url, content=body, headers={"Content-Type": "application/json"}), "request body")
    # The same without a content type (FastAPI and the generation route read such a body as JSON).
    _refused(client.request(method, url, content=body.encode()), "request body")


def test_refused_text_changes_nothing(client: TestClient) -> None:
    before = client.get("/api/v1/collections").json()["items"]
    _refused(client.post("/api/v1/collections", content='{"name": "\\u0000"}'), "request body")
    _refused(client.post("/api/v1/generations", content='{"prompt": "\\u0000", "size": "64x64"}'), "request body")
    assert client.get("/api/v1/collections").json()["items"] == before
    assert client.get("/api/v1/jobs").json()["items"] == []


def test_nul_in_multipart_form_fields_is_refused(client: TestClient) -> None:
    files = {"init_image": ("a.png", png_bytes(), "image/png")}
    r = client.post("/api/v1/generations", data={"prompt": "a\x00b", "size": "64x64"}, files=files)
    _refused(r, "form fields")
    r = client.post("/api/v1/generations", data={"params": '{"prompt": "fill\\u0000", "size": "64x64"}'}, files=files)
    _refused(r, "form fields")


def test_nul_in_a_form_encoded_body_or_a_header_is_refused(client: TestClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    _refused(client.post("/api/v1/collections", content="name=a%00b", headers=form), "request body")
    r = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64"}, headers={"Idempotency-Key": "a\x00b"})
    _refused(r, "request headers")


def test_storable_text_is_untouched(client: TestClient) -> None:
    """Escapes, astral characters (a surrogate pair) and a literal backslash-u are all ordinary text."""
    name = "café \U0001f600 \\u0000 tab\there"
    r = client.post(
        "/api/v1/collections",
        content=json.dumps({"name": name, "description": "ok"}),  # ensure_ascii: é and the emoji as \u escapes
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/collections/{r.json()['id']}").json()["name"] == name
    assert client.get("/api/v1/images", params={"q": "café"}).status_code == 200


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_regenerate_seed_out_of_range_is_refused(client: TestClient, services: Services, seed: int) -> None:
    """Found by the signed-in fuzz: regenerate took any integer seed, and GenerationParams' 32-bit bound then failed
    inside the service as a 500."""
    job = client.post("/api/v1/generations", json={"prompt": "a fox", "size": "64x64", "steps": 2}).json()
    drain(services)
    image_id = client.get(job["urls"]["get"]).json()["outputs"][0]["image_id"]
    r = client.post(f"/api/v1/images/{image_id}/regenerate", json={"seed": seed})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text
    assert r.json()["error"]["details"]["errors"][0]["loc"][:2] == ["body", "seed"]
    r = client.post(f"/api/v1/images/{image_id}/regenerate", json={"seed": 2**32 - 1})
    assert r.status_code == 202, r.text
