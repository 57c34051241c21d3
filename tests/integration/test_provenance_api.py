"""POST /provenance/check and GET /images/{id}/provenance: an image the worker made carries valid Content
Credentials, this install's watermark and its settings; another file says what it can."""

from __future__ import annotations

import io
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from studiolo.services import Services
from tests.helpers import app_with, auth_headers, create_user, drain, png_bytes
from tests.unit.test_provenance import CLAIM, generated_png
from tests.unit.test_provenance import credentials as other_install


def generate(client: TestClient, services: Services) -> tuple[str, bytes]:
    job = client.post(
        "/api/v1/generations", json={"prompt": "a lighthouse", "size": "256x256", "steps": 2, "seed": 11}
    ).json()
    drain(services)
    image_id = client.get(job["urls"]["get"]).json()["outputs"][0]["image_id"]
    return image_id, client.get(f"/api/v1/images/{image_id}/file").content


def check(client: TestClient, data: bytes, name: str = "x.png") -> Any:
    r = client.post("/api/v1/provenance/check", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_generated_image_reads_valid_with_this_installs_watermark(client: TestClient, services: Services) -> None:
    image_id, png = generate(client, services)
    r = client.get(f"/api/v1/images/{image_id}/provenance")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["c2pa"]["state"] == "valid"
    assert body["c2pa"]["actions"] == ["c2pa.created"]
    assert body["c2pa"]["generation"]["seed"] == 11 and body["c2pa"]["generation"]["model"] == "echo"
    assert body["watermark"]["found"] and body["watermark"]["this_install"]
    assert body["metadata"]["parameters"].startswith("a lighthouse")
    assert body["metadata"]["studiolo"]["safety"]["invisible_watermark"] is True
    assert client.get(f"/api/v1/images/{image_id}").json()["metadata"]["safety"]["c2pa"] is True
    # The same file uploaded reads the same.
    assert check(client, png) == body
    # Re-encoded as JPEG: the manifest is gone, the watermark stays (it is in the pixels).
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, "JPEG", quality=95)
    jpeg = check(client, buffer.getvalue(), "x.jpg")
    assert jpeg["c2pa"]["state"] == "none" and jpeg["watermark"]["this_install"]
    assert jpeg["metadata"] == {"parameters": None, "studiolo": None}


def test_an_upscale_is_signed_as_an_edit_of_its_source(client: TestClient, services: Services) -> None:
    source_id, _ = generate(client, services)
    r = client.post(f"/api/v1/images/{source_id}/upscale", json={"factor": 2})
    assert r.status_code == 202, r.text
    drain(services)
    child_id = client.get(r.json()["urls"]["get"]).json()["outputs"][0]["image_id"]
    c2pa = client.get(f"/api/v1/images/{child_id}/provenance").json()["c2pa"]
    assert c2pa["state"] == "valid" and c2pa["actions"] == ["c2pa.opened", "c2pa.edited"]
    assert c2pa["generation"]["kind"] == "upscale"


def test_check_reads_other_installs_and_plain_files(client: TestClient, tmp_path: Any) -> None:
    theirs = other_install(tmp_path, "theirs").sign(generated_png(), "image/png", CLAIM)
    body = check(client, theirs)
    assert body["c2pa"]["state"] == "untrusted" and body["c2pa"]["failures"] == ["signingCredential.untrusted"]
    assert body["watermark"] == {"found": False, "payload_hex": None, "this_install": False, "confidence": None}
    assert body["metadata"]["studiolo"] == {"seed": 7, "model": "demo"}
    plain = check(client, png_bytes((300, 300)))
    assert plain["c2pa"]["state"] == "none"
    assert plain["watermark"]["found"] is False and plain["watermark"]["payload_hex"] is None
    assert not plain["watermark"]["this_install"]


def test_check_refuses_what_it_cannot_read_with_clear_codes(client: TestClient) -> None:
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    cases = [
        ({"file": ("x.gif", gif.getvalue(), "image/gif")}, 415, "unsupported_media_type"),
        ({"file": ("x.png", b"not an image", "image/png")}, 415, "unsupported_media_type"),
        ({"file": ("x.png", b"", "image/png")}, 422, "empty_upload"),
        ({"file": ("x.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")}, 422, "image_corrupt"),
        ({"other": ("x.png", png_bytes(), "image/png")}, 422, "invalid_upload"),
    ]
    for files, status, code in cases:
        r = client.post("/api/v1/provenance/check", files=files)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    r = client.post("/api/v1/provenance/check", json={"file": "x"})
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_content_type")


def test_check_keeps_to_the_upload_limits(settings_factory: Any) -> None:
    with app_with(settings_factory, max_upload_bytes=2048) as (services, api):
        api.headers.update(auth_headers(services))
        big = png_bytes((300, 300))  # a flat picture compresses to ~1 KB: give it texture
        noisy = io.BytesIO()
        Image.effect_noise((64, 64), 60).convert("RGB").save(noisy, "PNG")
        assert len(noisy.getvalue()) > 2048 >= len(big)
        r = api.post("/api/v1/provenance/check", files={"file": ("x.png", noisy.getvalue(), "image/png")})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "upload_too_large"), r.text
        assert r.json()["error"]["details"]["limit"] == 2048
        assert api.post("/api/v1/provenance/check", files={"file": ("x.png", big, "image/png")}).status_code == 200


def test_an_images_provenance_is_its_owners_alone(client: TestClient, services: Services, api: TestClient) -> None:
    image_id, _ = generate(client, services)
    stranger = create_user(services, "stranger@example.com")
    r = api.get(f"/api/v1/images/{image_id}/provenance", headers=auth_headers(services, stranger))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "image_not_found")
    assert api.get(f"/api/v1/images/{image_id}/provenance").status_code == 401
    assert api.post("/api/v1/provenance/check", files={"file": ("x.png", png_bytes())}).status_code == 401
