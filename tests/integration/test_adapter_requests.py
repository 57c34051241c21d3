"""A request's adapters at submit time (issue 19): the pictures of ControlNet units and the reference (data: URLs,
the caller's gallery images, multipart files), the checks against the model before anything is queued, and what
the queued job keeps (params and stored inputs). The engines that apply them are tested in tests/unit."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from studiolo.domain.adapters.models import InstalledAdapter
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import auth_headers, create_user, png_bytes
from tests.tiny_pipeline import make_tiny_sd_pipeline

GEN = "/api/v1/generations"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")


def _adapter(services: Services, adapter_id: str, kind: str, family: str | None = None, **meta: Any) -> None:
    with services.db.session() as session:
        session.add(
            InstalledAdapter(
                id=adapter_id,
                kind=kind,
                family=family,
                source="single_file",
                path=f"/nowhere/{adapter_id}.safetensors",
                format=None,
                size_bytes=1,
                sha256="0" * 64,
                meta={"context_dim": 32, **meta},
            )
        )
    services.generation.adapters.invalidate()


@pytest.fixture
def tiny(services: Services, tmp_path: Path) -> Services:
    """The tiny random SD model (32-wide text encoder, no family) and adapters rows that fit it."""
    services.catalog.import_path(make_tiny_sd_pipeline(tmp_path / "tiny"), model_id="tiny", copy=False)
    _adapter(services, "edges", "controlnet", control_type="canny")
    _adapter(services, "poses", "controlnet", control_type="pose")
    _adapter(services, "look", "ip_adapter")
    _adapter(services, "ink", "lora")
    return services


def _data_url(color: tuple[int, int, int] = (10, 200, 30)) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes((64, 64), color)).decode()


def _job(services: Services, job_id: str) -> Job:
    with services.db.session() as session:
        job = session.get_one(Job, job_id)
        session.expunge(job)
        return job


def _jobs(services: Services) -> int:
    with services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def _body(**extra: Any) -> dict[str, Any]:
    return {"prompt": "a lighthouse", "model": "tiny", "size": "64x64", "steps": 2, **extra}


def test_a_control_picture_as_a_data_url_is_kept_with_the_job(client: TestClient, tiny: Services) -> None:
    r = client.post(GEN, json=_body(controls=[{"type": "canny", "image": _data_url(), "strength": 0.7}]))
    assert r.status_code == 202, r.text
    job = _job(tiny, r.json()["id"])
    # The default ControlNet for the type is chosen and recorded; the picture is a stored input, not in the params.
    assert job.params["controls"] == [
        {"type": "canny", "model": "edges", "strength": 0.7, "start": 0.0, "end": 1.0, "preprocess": True}
    ]
    stored = Image.open(io.BytesIO(tiny.store.get(job.input_keys["control0"])))
    assert stored.size == (64, 64) and stored.getpixel((3, 3))[:3] == (10, 200, 30)
    assert "image" not in json.dumps(job.params["controls"])


def test_a_gallery_picture_of_the_caller_is_used_and_anothers_is_not_found(client: TestClient, tiny: Services) -> None:
    own = client.post(GEN, json=_body(model="echo"))
    assert own.status_code == 202
    from tests.helpers import drain

    drain(tiny)
    image_id = client.get(own.json()["urls"]["get"]).json()["outputs"][0]["image_id"]
    r = client.post(GEN, json=_body(reference_image=image_id, reference_strength=0.4))
    assert r.status_code == 202, r.text
    job = _job(tiny, r.json()["id"])
    assert job.params["reference"] == {"model": "look", "strength": 0.4}
    assert "reference" in job.input_keys

    other = create_user(tiny, "other@example.com")
    before = _jobs(tiny)
    r = client.post(GEN, json=_body(reference_image=image_id), headers=auth_headers(tiny, other))
    assert r.status_code == 404 and r.json()["error"]["code"] == "image_not_found", r.text
    assert _jobs(tiny) == before


def test_multipart_control_files_make_a_txt2img_job(client: TestClient, tiny: Services) -> None:
    params = _body(controls=[{"type": "canny"}, {"type": "canny", "model": "edges", "end": 0.5}])
    files = {
        "control_image_0": ("a.png", png_bytes((64, 64), (255, 0, 0)), "image/png"),
        "control_image_1": ("b.png", png_bytes((64, 64), (0, 0, 255)), "image/png"),
    }
    r = client.post(GEN, data={"params": json.dumps(params)}, files=files)
    assert r.status_code == 202, r.text
    job = _job(tiny, r.json()["id"])
    assert job.kind == "txt2img" and set(job.input_keys) == {"control0", "control1"}
    assert [u["end"] for u in job.params["controls"]] == [1.0, 0.5]


@pytest.mark.parametrize(
    ("body", "files", "status", "code"),
    [
        ({"controls": [{"type": "canny"}]}, {}, 422, "missing_control_image"),
        ({}, {"control_image_2": png_bytes()}, 422, "unexpected_file"),
        ({"controls": [{"type": "canny", "image": "data:image/png;base64,@@@"}]}, {}, 422, "invalid_image"),
        ({"controls": [{"type": "depth", "image": "DATA"}]}, {}, 422, "adapter_not_installed"),
        ({"controls": [{"type": "canny", "image": "DATA", "model": "ink"}]}, {}, 422, "unknown_adapter"),
        ({"controls": [{"type": "pose", "image": "DATA"}]}, {}, 422, "preprocessor_unavailable"),
        ({"loras": [{"name": "nope"}]}, {}, 422, "unknown_adapter"),
        ({"model": "echo", "loras": [{"name": "ink"}]}, {}, 422, "adapters_unsupported"),
        ({"prompt": "a cat <lora:nope:0.5>"}, {}, 422, "unknown_adapter"),
        ({"hires": {"upscaler": "nearest"}}, {}, 422, "unknown_upscaler"),
        ({"hires": {"scale": 4}, "size": "1024x1024"}, {}, 422, "image_too_large"),
    ],
)
def test_bad_adapter_requests_are_refused_before_anything_is_queued(
    client: TestClient, tiny: Services, body: dict[str, Any], files: dict[str, bytes], status: int, code: str
) -> None:
    text = json.dumps(_body(**body)).replace('"DATA"', json.dumps(_data_url()))
    before = _jobs(tiny)
    if files:
        upload = {k: ("x.png", v, "image/png") for k, v in files.items()}
        r = client.post(GEN, data={"params": text}, files=upload)
    else:
        r = client.post(GEN, content=text, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
    assert _jobs(tiny) == before


def test_a_ready_map_needs_no_preprocessor_and_depth_needs_one(client: TestClient, tiny: Services) -> None:
    ready = {"type": "pose", "image": _data_url(), "preprocess": False}
    assert client.post(GEN, json=_body(controls=[ready])).status_code == 202
    _adapter(tiny, "depths", "controlnet", control_type="depth")
    depth = {"type": "depth", "image": _data_url()}
    refused = client.post(GEN, json=_body(controls=[depth]))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "preprocessor_unavailable", refused.text
    assert refused.json()["error"]["details"]["field"] == "controls.0.preprocess"
    _adapter(tiny, "dpt-tiny", "preprocessor", preprocessor="depth")
    assert client.post(GEN, json=_body(controls=[depth])).status_code == 202


def test_an_adapter_of_another_family_is_a_conflict(client: TestClient, tiny: Services) -> None:
    _adapter(tiny, "xl-style", "lora", family="sdxl")
    with tiny.db.session() as session:
        session.get_one(InstalledAdapter, "xl-style").meta = {"context_dim": 2048}
    tiny.generation.adapters.invalidate()
    r = client.post(GEN, json=_body(loras=[{"name": "xl-style", "weight": 0.5}]))
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "adapter_incompatible" and error["details"]["adapter"] == "xl-style"


def test_lora_tags_leave_the_prompt_and_join_the_loras(client: TestClient, tiny: Services) -> None:
    r = client.post(
        GEN, json=_body(prompt="a lighthouse, <lora:ink:0.6>, at dusk", loras=[{"name": "ink", "weight": 0.2}])
    )
    assert r.status_code == 202, r.text
    params = _job(tiny, r.json()["id"]).params
    # The tag comes after the field, so its weight wins; the engine's prompt has no tag, the typed one keeps it.
    assert params["loras"] == [{"name": "ink", "weight": 0.6}]
    assert params["final_prompt"] == "a lighthouse, at dusk"
    assert params["prompt"] == "a lighthouse, <lora:ink:0.6>, at dusk"


def test_hires_keeps_the_final_size_and_a_job_without_adapters_keeps_its_old_params(
    client: TestClient, tiny: Services
) -> None:
    r = client.post(GEN, json=_body(hires={"scale": 1.5, "strength": 0.4}))
    assert r.status_code == 202, r.text
    params = _job(tiny, r.json()["id"]).params
    assert params["hires"] == {
        "scale": 1.5,
        "upscaler": "lanczos",
        "strength": 0.4,
        "steps": 2,
        "width": 96,
        "height": 96,
    }
    assert (params["width"], params["height"]) == (64, 64)
    plain = _job(tiny, client.post(GEN, json=_body()).json()["id"]).params
    assert not {"loras", "embeddings", "controls", "reference", "hires"} & set(plain)
