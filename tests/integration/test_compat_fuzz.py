"""Robustness of the compatible faces (issue 18): schemathesis over /v1 (OpenAI Images) and /sdapi (AUTOMATIC1111),
then the malformed inputs a schema fuzzer does not think of, written by hand.

The faces block until their job ends, so here a worker runs (one inline worker, the echo engine) and the wait is
short: a valid request completes, an invalid one is refused. Every error must be in the face's own shape with a
stable code, and no input may be a 5xx, save one documented case: a job that FAILED makes both faces answer 500
with the job's own error code (as OpenAI and A1111 do), which the check verifies against the job as stored.
test_fuzz.py covers every other operation with the native envelope.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from PIL import Image
from sqlalchemy import select

from studiolo.app import create_app
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.schemas import ApiKeyCreate
from studiolo.domain.generation.models import Job
from studiolo.services import Services, build_services
from tests.conftest import PgDatabases, make_settings
from tests.helpers import create_user

FACES = "^/v1/|^/sdapi/"
MAX_PIXELS = 128 * 128


@dataclass
class Faces:
    services: Services
    owner: str
    headers: dict[str, str]
    client: TestClient


@pytest.fixture(scope="module")
def faces(
    tmp_path_factory: pytest.TempPathFactory, migrated_db_template: Path, pg_databases: PgDatabases | None
) -> Iterator[Faces]:
    data = tmp_path_factory.mktemp("compat-fuzz") / "data"
    data.mkdir()
    url = pg_databases.fresh() if pg_databases else ""
    if not url:
        (data / "studiolo.db").write_bytes(migrated_db_template.read_bytes())
    settings_ = make_settings(
        data,
        database_url=url,
        inline_workers=1,
        worker_poll_seconds=0.05,
        compat_wait_seconds=3,
        max_pixels=MAX_PIXELS,
        rate_limit_generate="10000/minute",  # the fuzz submits faster than a person; the limit is not under test
    )
    services = build_services(settings_, upgrade_db=False)
    try:
        owner = create_user(services, "faces@example.com")
        key = services.keys.create(owner, ApiKeyCreate(name="fuzz"), Origin("127.0.0.1", "tests")).key
        # The client's lifespan starts the inline worker once, for the whole module.
        with TestClient(create_app(services=services, start_workers=True)) as client:
            yield Faces(services, owner, {"Authorization": f"Bearer {key}"}, client)
    finally:
        services.close(timeout=10)
        if url and pg_databases:
            pg_databases.drop(url)


# --- the checks ---------------------------------------------------------------------------------------------------


def _last_job(services: Services, owner: str) -> Job | None:
    with services.db.session() as session:
        return session.scalars(
            select(Job).where(Job.owner_id == owner).order_by(Job.created_at.desc(), Job.id.desc()).limit(1)
        ).first()


def error_code(path: str, body: Any) -> str:
    """The stable code of an error body, asserting the face's shape (OpenAI's under /v1, A1111's under /sdapi)."""
    assert isinstance(body, dict), body
    if path.startswith("/v1/"):
        error = body.get("error")
        assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, body
        assert isinstance(error["message"], str) and error["message"], body
        assert isinstance(error["type"], str) and error["type"], body
        assert error["param"] is None or isinstance(error["param"], str), body
        assert isinstance(error["code"], str) and error["code"], body
        return error["code"]
    assert set(body) == {"error", "detail", "body", "errors"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    return str(body["error"])


def check_answer(services: Services, owner: str, path: str, status: int, content_type: str, text: str) -> None:
    """Errors in the face's shape; a 5xx only for a job that failed, carrying that job's own code."""
    if status < 400:
        return
    assert "json" in content_type, (status, content_type, text[:300])
    code = error_code(path, json.loads(text))
    if status >= 500:
        job = _last_job(services, owner)
        assert status == 500 and job is not None and job.status == "failed", (status, text[:300])
        assert code == job.error_code, (code, job.error_code)


# --- schemathesis ---------------------------------------------------------------------------------------------------


class WithoutLifespan:
    """The app minus its lifespan: schemathesis runs an app's lifespan around every call, and its shutdown would stop
    the module's worker."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture(scope="module")
def faces_schema(faces: Faces) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", WithoutLifespan(faces.client.app))


def face_errors(faces: Faces) -> Callable[..., bool | None]:
    def check(ctx: Any, response: Any, case: Any) -> bool | None:
        content_type = response.headers.get("content-type", [""])[0]
        check_answer(faces.services, faces.owner, case.path, response.status_code, content_type, response.text)
        return True

    return check


schema = schemathesis.pytest.from_fixture("faces_schema")


@schema.include(path_regex=FACES).parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_fuzzed_input_is_a_server_error_or_another_shape(case: Any, faces: Faces) -> None:
    case.call_and_validate(headers=faces.headers, checks=[face_errors(faces)])


# --- by hand --------------------------------------------------------------------------------------------------------


def _png(size: tuple[int, int] = (64, 64), color: tuple[int, ...] = (200, 40, 40), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _mask(size: tuple[int, int]) -> bytes:
    return _png(size, (0, 0, 0, 0), mode="RGBA")


TXT = "/sdapi/v1/txt2img"
IMG = "/sdapi/v1/img2img"
GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"
SMALL = {"width": 64, "height": 64, "steps": 2}
# (path, how it is sent, what, the stable code it must answer with)
A1111_CASES: list[tuple[str, dict[str, Any], str]] = [
    (IMG, {"prompt": "x", "init_images": ["not*base64!"], **SMALL}, "invalid_image"),
    (
        IMG,
        {"prompt": "x", "init_images": ["data:text/plain;base64," + _b64(b"not a picture")]},
        "unsupported_media_type",
    ),
    (IMG, {"prompt": "x", "init_images": [_b64(_png())], "mask": "%%%%", **SMALL}, "empty_upload"),
    (TXT, {"prompt": "x", "width": 100_000, "height": 100_000}, "invalid_input"),
    (TXT, {"prompt": "x", "width": 2**40, "height": 64}, "invalid_input"),
    (TXT, {"prompt": "x", "batch_size": 1000, **SMALL}, "too_many_images"),
    (TXT, {"prompt": "x", "batch_size": 1000, "n_iter": 1000, **SMALL}, "too_many_images"),
    (TXT, {"prompt": "x", "sampler_name": "No Such Sampler", **SMALL}, "sampler_not_found"),
    (TXT, {"prompt": "x", "scheduler": "no-such-schedule", **SMALL}, "invalid_scheduler"),
    (TXT, {"prompt": "x" * 100_000, **SMALL}, "prompt_too_long"),
    (TXT, {"prompt": "a\x00b", **SMALL}, "invalid_input"),
    (TXT, {"prompt": "x", "negative_prompt": "\x00", **SMALL}, "invalid_input"),
    (TXT, {**SMALL, "prompt": "x", "steps": -5}, "invalid_input"),
    (TXT, {"prompt": "x", "seed": 2**70, **SMALL}, "invalid_input"),
]


@pytest.mark.parametrize(("path", "body", "code"), A1111_CASES, ids=[f"a1111-{i}" for i in range(len(A1111_CASES))])
def test_malformed_a1111_requests_are_clear_4xx(faces: Faces, path: str, body: dict[str, Any], code: str) -> None:
    r = faces.client.post(path, json=body, headers=faces.headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    got = error_code(path, r.json())
    assert got == code, (got, r.text[:300])


@pytest.mark.parametrize(
    ("path", "content", "content_type", "code"),
    [
        (TXT, b"{not json", "application/json", "invalid_input"),
        (TXT, b"[1, 2]", "application/json", "invalid_input"),
        (TXT, b"prompt=x", "application/x-www-form-urlencoded", "invalid_input"),
        (GEN, b"{not json", "application/json", "invalid_json"),
        (GEN, b'[{"prompt": "x"}]', "application/json", "invalid_input"),
        (GEN, b"prompt=x", "text/plain", "unsupported_content_type"),
        (EDIT, b'{"prompt": "x"}', "application/json", "unsupported_content_type"),
    ],
)
def test_bodies_of_the_wrong_kind_are_clear_4xx(
    faces: Faces, path: str, content: bytes, content_type: str, code: str
) -> None:
    r = faces.client.post(path, content=content, headers={**faces.headers, "Content-Type": content_type})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    got = error_code(path, r.json())
    assert got == code, (got, r.text[:300])


OPENAI_CASES: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "x", "size": "1x99999"}, "invalid_size"),
    ({"prompt": "x", "size": "99999999999x64"}, "invalid_input"),
    ({"prompt": "x", "size": "64x1"}, "invalid_size"),
    ({"prompt": "x", "n": 0}, "invalid_input"),
    ({"prompt": "x", "n": 1000}, "invalid_input"),
    ({"prompt": "x", "sampler": "no-such-sampler", "steps": 2, "size": "64x64"}, "invalid_sampler"),
    ({"prompt": "x", "scheduler": "no-such-schedule", "steps": 2, "size": "64x64"}, "invalid_scheduler"),
    ({"prompt": "x" * 100_000}, "invalid_input"),
    ({"prompt": "a\x00b", "size": "64x64"}, "invalid_input"),
    ({"prompt": "x", "user": "\x00", "size": "64x64"}, "invalid_input"),
    ({"prompt": "x", "seed": -1}, "invalid_input"),
]


@pytest.mark.parametrize(("body", "code"), OPENAI_CASES, ids=[f"openai-{i}" for i in range(len(OPENAI_CASES))])
def test_malformed_openai_generations_are_clear_4xx(faces: Faces, body: dict[str, Any], code: str) -> None:
    r = faces.client.post(GEN, json=body, headers=faces.headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert error_code(GEN, r.json()) == code, r.text[:300]


EDIT_CASES: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    ({"image": ("i.png", b"\x89PNG not really", "image/png")}, {"prompt": "x"}, "unsupported_media_type"),
    ({"image": ("i.txt", b"hello", "text/plain")}, {"prompt": "x"}, "unsupported_media_type"),
    (
        {"image": ("i.png", _png(), "image/png"), "mask": ("m.png", _mask((32, 32)), "image/png")},
        {"prompt": "x"},
        "invalid_mask",
    ),
    (
        {"image": ("i.png", _png(), "image/png"), "mask": ("m.png", b"nope", "image/png")},
        {"prompt": "x"},
        "unsupported_media_type",
    ),
    ({"image": ("i.png", _png(), "image/png")}, {"prompt": "a\x00b"}, "invalid_input"),
    ({"image": ("i.png", _png(), "image/png")}, {"prompt": "x", "n": "0"}, "invalid_input"),
    ({"image": ("i.png", _png(), "image/png")}, {"prompt": "x", "n": "many"}, "invalid_input"),
    ({"other": ("o.png", _png(), "image/png")}, {"prompt": "x"}, "invalid_upload"),
    ({}, {"prompt": "x", "image": "not a file"}, "missing_image"),
]


@pytest.mark.parametrize(("files", "data", "code"), EDIT_CASES, ids=[f"edit-{i}" for i in range(len(EDIT_CASES))])
def test_malformed_openai_edits_are_clear_4xx(
    faces: Faces, files: dict[str, Any], data: dict[str, Any], code: str
) -> None:
    if not files:  # a multipart body with text fields only
        r = faces.client.post(EDIT, files={"prompt": (None, "x"), "image": (None, "not a file")}, headers=faces.headers)
    else:
        r = faces.client.post(EDIT, files=files, data=data, headers=faces.headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert error_code(EDIT, r.json()) == code, r.text[:300]


def test_a_huge_openai_size_is_fitted_to_the_limit(faces: Faces) -> None:
    """OpenAI's face makes the nearest size allowed (its documented mapping), not an error."""
    r = faces.client.post(GEN, json={"prompt": "x", "size": "99999x99999", "steps": 2}, headers=faces.headers)
    assert r.status_code == 200 and r.json()["size"] == "128x128", r.text[:300]


def test_an_a1111_mask_of_another_size_is_scaled_to_the_image(faces: Faces) -> None:
    """A1111 resizes the mask to the image (its img2img does), so this one is not an error: the job inpaints."""
    mask = _b64(_png((32, 48), (255,), "L"))
    r = faces.client.post(
        IMG, json={"prompt": "x", "init_images": [_b64(_png())], "mask": mask, **SMALL}, headers=faces.headers
    )
    assert r.status_code == 200 and len(r.json()["images"]) == 1, r.text[:300]
    assert json.loads(r.json()["info"])["is_using_inpainting_conditioning"] is True


def test_a_valid_request_completes_on_both_faces(faces: Faces) -> None:
    """The fuzz's worker is live: what is valid gets images, so the fuzz reached the code past validation."""
    r = faces.client.post(TXT, json={"prompt": "a harbour", **SMALL}, headers=faces.headers)
    assert r.status_code == 200 and len(r.json()["images"]) == 1, r.text[:300]
    r = faces.client.post(GEN, json={"prompt": "a harbour", "size": "64x64", "steps": 2}, headers=faces.headers)
    assert r.status_code == 200 and len(r.json()["data"]) == 1, r.text[:300]
