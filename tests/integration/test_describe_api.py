"""POST /api/v1/describe and its neighbours over HTTP, with the offline describer (the default) and with an
OpenAI-compatible vision server (tests/vision_server.py); descriptions are their owner's alone; a job names one with
``description_id`` and its images keep it. On PostgreSQL too when the suite runs there."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from studiolo.cli import app as cli_app
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.services import Services
from tests.helpers import app_with, auth_headers, create_user, drain, png_bytes, wait_terminal
from tests.vision_server import VisionServer


def _jpeg(size: tuple[int, int] = (120, 80)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (0, 128, 128))
    image.paste((183, 65, 14), (30, 20, 90, 60))
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _describe(client: TestClient, data: bytes, **form: str) -> Any:
    return client.post("/api/v1/describe", files={"photo": ("me.jpg", data, "image/jpeg")}, data=form)


def test_offline_describe_round_trip(client: TestClient, services: Services) -> None:
    r = _describe(client, _jpeg(), template="fursona")
    assert r.status_code == 201, r.text
    view = r.json()
    assert view["describer"] == "offline" and view["model"] == "" and view["template"] == "fursona"
    d = view["description"]
    assert d["colors"][0]["name"] == "teal" and d["colors"][0]["hex"].startswith("#")
    assert d["orientation"] == "landscape" and d["faces"] == [] and 0 < d["brightness"] < 1
    assert view["known_by_vision_only"] == ["subject", "species", "archetype", "features", "clothing", "setting"]
    # The fur takes the subject's colours (the centre: rust), not the background's (teal).
    assert view["prompt"].startswith("anthropomorphic animal fursona character, fur colours rust")
    assert "teal" not in view["prompt"]
    assert view["style"] == "anime" and view["negative_prompt"] and view["cost"] == 0
    assert view["urls"] == {"self": f"/api/v1/describe/{view['id']}", "photo": f"/api/v1/describe/{view['id']}/photo"}

    assert client.get(view["urls"]["self"]).json() == view
    photo = client.get(view["urls"]["photo"])
    assert photo.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(photo.content)).size == (120, 80)  # kept as PNG, upright, no metadata
    second = _describe(client, png_bytes((40, 60)), template="portrait").json()
    page = client.get("/api/v1/describe", params={"limit": 1}).json()
    assert [i["id"] for i in page["items"]] == [second["id"]] and page["next_cursor"] == second["id"]
    rest = client.get("/api/v1/describe", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [i["id"] for i in rest["items"]] == [view["id"]] and rest["next_cursor"] is None

    # The images rendered from it keep the description; deleting it keeps the images, without the link.
    job = client.post(
        "/api/v1/generations",
        json={"prompt": view["prompt"], "size": "64x64", "steps": 1, "description_id": view["id"]},
    )
    assert job.status_code == 202, job.text
    drain(services)
    image_id = wait_terminal(services, job.json()["id"]).outputs[0].image_id
    assert client.get(f"/api/v1/images/{image_id}").json()["description_id"] == view["id"]
    assert client.delete(view["urls"]["self"]).status_code == 204
    assert client.get(view["urls"]["self"]).json()["error"]["code"] == "description_not_found"
    assert client.get(view["urls"]["photo"]).status_code == 404
    assert client.get(f"/api/v1/images/{image_id}").json()["description_id"] is None


def test_descriptions_are_their_owners(client: TestClient, services: Services) -> None:
    mine = _describe(client, _jpeg()).json()
    other = TestClient(client.app)
    other.headers.update(auth_headers(services, create_user(services, "other@example.com")))
    for method, url in [
        ("GET", mine["urls"]["self"]),
        ("GET", mine["urls"]["photo"]),
        ("DELETE", mine["urls"]["self"]),
    ]:
        r = other.request(method, url)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "description_not_found")
    assert other.get("/api/v1/describe").json()["items"] == []
    # Naming someone else's description on a job is refused as if it did not exist.
    r = other.post("/api/v1/generations", json={"prompt": "a fox", "description_id": mine["id"]})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "description_not_found")
    assert client.get(mine["urls"]["self"]).status_code == 200


@pytest.mark.parametrize(
    ("form", "data", "status", "code"),
    [
        ({"template": "dragon"}, None, 422, "invalid_template"),
        ({"template": "custom"}, None, 422, "invalid_instruction"),
        ({"template": "custom", "instruction": "x" * 1001}, None, 422, "invalid_instruction"),
        ({}, b"not an image at all", 415, "unsupported_media_type"),
        ({}, b"", 422, "empty_upload"),
        ({}, png_bytes()[:60], 422, "image_corrupt"),
    ],
)
def test_bad_requests_have_stable_codes(
    client: TestClient, form: dict[str, str], data: bytes | None, status: int, code: str
) -> None:
    r = _describe(client, _jpeg() if data is None else data, **form)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


def test_describing_counts_in_the_generation_rate_limit(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, rate_limits_enabled=True, rate_limit_generate="2/minute") as (services, c):
        c.headers.update(auth_headers(services))
        assert [_describe(c, _jpeg()).status_code for _ in range(2)] == [201, 201]
        limited = _describe(c, _jpeg())
        assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limited")


def test_not_multipart_and_no_photo(client: TestClient) -> None:
    r = client.post("/api/v1/describe", json={"template": "character"})
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_content_type")
    r = client.post("/api/v1/describe", data={"template": "character"}, files={"other": ("a", b"x")})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_upload")


@pytest.fixture(scope="module")
def vision() -> Iterator[VisionServer]:
    with VisionServer() as server:
        yield server


def test_vision_describer_over_http(settings_factory: Callable[..., Any], vision: VisionServer) -> None:
    overrides = {
        "describer": "openai",
        "describe_api_base": f"{vision.url}/v1",
        "describe_api_key": "sk-vision",
        "describe_model": "gpt-test",
        "describe_retries": 0,
    }
    with app_with(settings_factory, **overrides) as (services, anonymous):
        anonymous.headers.update(auth_headers(services))
        vision.mode = "fenced"
        view = _describe(anonymous, _jpeg(), template="character").json()
        assert view["describer"] == "openai" and view["model"] == "gpt-test-2026-01-01"
        assert view["description"]["subject"] == "a young woman with short red hair"
        assert view["description"]["clothing"] == ["denim jacket", "silver earrings"]
        assert view["known_by_vision_only"] == [] and view["style"] == "watercolor"
        assert view["prompt"].startswith(
            "full-body character design of a young woman with short red hair, the wanderer"
        )
        assert view["usage"] == {"prompt_tokens": 812, "completion_tokens": 96, "attempts": 1}
        # A large photo goes to the provider at most 1024 px long; the one kept is the original size.
        vision.mode = "good"
        large = _describe(anonymous, _jpeg((1600, 1200))).json()
        sent = vision.requests[-1]["json"]["messages"][1]["content"][1]["image_url"]["url"].split(",", 1)[1]
        assert Image.open(io.BytesIO(base64.b64decode(sent))).size == (1024, 768)
        assert Image.open(io.BytesIO(anonymous.get(large["urls"]["photo"]).content)).size == (1600, 1200)
        for mode, status, code in [
            ("refusal", 422, "describe_refused"),
            ("malformed", 502, "describer_invalid_reply"),
            ("error", 503, "describer_unavailable"),
        ]:
            vision.mode = mode
            r = _describe(anonymous, _jpeg())
            assert (r.status_code, r.json()["error"]["code"]) == (status, code)
        # A refused or failed describe keeps nothing: no row, no photo.
        assert len(anonymous.get("/api/v1/describe").json()["items"]) == 2
        assert len(list(services.store.iter_keys("descriptions/"))) == 2


def test_cli_describe(settings_factory: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_factory()
    monkeypatch.setenv("STUDIOLO_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("STUDIOLO_ENV", "test")
    if settings.database_url:
        monkeypatch.setenv("STUDIOLO_DATABASE_URL", settings.database_url)
    photo = tmp_path / "me.jpg"
    photo.write_bytes(_jpeg())
    result = CliRunner().invoke(cli_app, ["describe", str(photo), "--template", "scene"])
    assert result.exit_code == 0, result.output
    assert "by the offline describer" in result.output and "teal" in result.output
    assert "prompt: a scene" in result.output and "studiolo generate" in result.output
    result = CliRunner().invoke(cli_app, ["describe", str(photo), "--template", "custom"])
    assert result.exit_code == 1 and "invalid_instruction" in result.output


def test_describing_costs_credits_when_billing_is_on(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, billing="quotas", describe_credits=2) as (services, anonymous):
        user = create_user(services, "payer@example.com")
        anonymous.headers.update(auth_headers(services, user))
        before = anonymous.get("/api/v1/billing").json()["balance"]
        assert before >= 3  # the free plan's grant
        view = _describe(anonymous, _jpeg())
        assert view.status_code == 201, view.text
        assert anonymous.get("/api/v1/billing").json()["balance"] == before - 2
        entry = services.billing.ledger(user).items[0]
        assert (entry.amount, entry.reason) == (-2, "Described a photo.")
        # Down to 1 credit: refused before the describer is asked, and nothing is kept.
        services.billing.adjust_credits(user, -(before - 3), reason="test", actor_id=None, origin=Origin())
        refused = _describe(anonymous, _jpeg((90, 90)))
        assert (refused.status_code, refused.json()["error"]["code"]) == (402, "insufficient_credits")
        assert refused.json()["error"]["details"]["needed"] == 2
        assert len(anonymous.get("/api/v1/describe").json()["items"]) == 1
        # A failed describe costs nothing.
        services.billing.adjust_credits(user, 5, reason="test", actor_id=None, origin=Origin())
        balance = anonymous.get("/api/v1/billing").json()["balance"]
        assert _describe(anonymous, b"nope").status_code == 415
        assert anonymous.get("/api/v1/billing").json()["balance"] == balance
        # The install's administrator (the local owner) is never charged, as for jobs.
        admin = TestClient(anonymous.app)
        admin.headers.update(auth_headers(services))
        admin_before = services.billing.summary(LOCAL_USER_ID).balance
        assert _describe(admin, _jpeg()).status_code == 201
        assert services.billing.summary(LOCAL_USER_ID).balance == admin_before
