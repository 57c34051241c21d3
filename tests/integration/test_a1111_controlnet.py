"""The sd-webui-controlnet extension's API on the A1111 face (issue 19): ``alwayson_scripts.controlnet.args`` units
become the job's ControlNet ``controls`` (their pictures stored as the job's inputs) and an IP-Adapter unit its
reference; what Studiolo does not take is named in ``info``, a bad unit is refused in A1111's error shape. The jobs
are only queued here (no worker): their params and inputs are what is checked."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.compat.a1111_controlnet import controlnet_fields
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import app_with, auth_headers, png_bytes
from tests.integration.test_adapter_requests import _adapter
from tests.tiny_pipeline import make_tiny_sd_pipeline

B64 = base64.b64encode(png_bytes((64, 64), (0, 0, 0))).decode()


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture
def face(settings_factory: Any, tiny_sd: Path) -> Iterator[tuple[Services, TestClient]]:
    with app_with(settings_factory, compat_wait_seconds=0.05) as (services, client):
        client.headers.update(auth_headers(services))
        services.catalog.import_path(tiny_sd, model_id="tiny-sd", copy=False)
        _adapter(services, "control_v11p_sd15_canny", "controlnet", control_type="canny")
        _adapter(services, "control_v11f1p_sd15_depth", "controlnet", control_type="depth")
        _adapter(services, "ip-adapter_sd15", "ip_adapter")
        yield services, client


def _txt2img(client: TestClient, services: Services, units: list[dict[str, Any]]) -> tuple[int, Any, Job | None]:
    before = {j["id"] for j in client.get("/api/v1/jobs").json()["items"]}
    body = {
        "prompt": "a lighthouse",
        "width": 64,
        "height": 64,
        "steps": 2,
        "override_settings": {"sd_model_checkpoint": "tiny-sd"},
        "alwayson_scripts": {"controlnet": {"args": units}},
    }
    r = client.post("/sdapi/v1/txt2img", json=body)
    new = [j["id"] for j in client.get("/api/v1/jobs").json()["items"] if j["id"] not in before]
    job = None
    if new:
        with services.db.session() as session:
            job = session.get_one(Job, new[0])
            session.expunge(job)
    return r.status_code, r.json(), job


def test_controlnet_units_become_the_jobs_controls_and_reference(face: tuple[Services, TestClient]) -> None:
    services, client = face
    units = [
        {
            "enabled": True,
            "module": "canny",
            "model": "control_v11p_sd15_canny [d14c016b]",
            "weight": 0.8,
            "image": B64,
            "guidance_start": 0.1,
            "guidance_end": 0.9,
            "processor_res": 512,
            "threshold_a": 100,
            "threshold_b": 200,
        },
        {"enabled": False, "module": "openpose", "model": "None", "image": B64},
        {"module": "none", "model": "control_v11f1p_sd15_depth", "input_image": f"data:image/png;base64,{B64}"},
        {"module": "ip-adapter_clip_sd15", "model": "ip-adapter_sd15 [6a3f6166]", "weight": 0.5, "image": B64},
    ]
    status, body, job = _txt2img(client, services, units)
    assert status == 504 and body["error"] == "job_still_running", body
    assert job is not None
    assert job.params["controls"] == [
        {
            "type": "canny",
            "model": "control_v11p_sd15_canny",
            "strength": 0.8,
            "start": 0.1,
            "end": 0.9,
            "preprocess": True,
        },
        {
            "type": "depth",
            "model": "control_v11f1p_sd15_depth",
            "strength": 1.0,
            "start": 0.0,
            "end": 1.0,
            "preprocess": False,
        },
    ]
    assert job.params["reference"] == {"model": "ip-adapter_sd15", "strength": 0.5}
    assert set(job.input_keys) == {"control0", "control1", "reference"}


@pytest.mark.parametrize(
    ("unit", "code"),
    [
        ({"module": "canny", "model": "None"}, "missing_control_image"),
        ({"module": "reference_only", "model": "None", "image": B64}, "invalid_control_type"),
        ({"module": "canny", "model": "None", "image": B64, "weight": "strong"}, "invalid_input"),
        ({"module": "canny", "model": "None", "image": "@@not base64@@"}, "invalid_image"),
    ],
)
def test_a_bad_unit_is_refused_in_a1111s_shape(
    face: tuple[Services, TestClient], unit: dict[str, Any], code: str
) -> None:
    services, client = face
    status, body, job = _txt2img(client, services, [unit])
    assert status == 422, body
    assert job is None
    assert code in str(body), body


def test_what_studiolo_does_not_take_is_named() -> None:
    fields, ignored = controlnet_fields(
        {
            "controlnet": {
                "args": [
                    {"module": "canny", "model": "other_canny [abcd1234]", "image": B64, "pixel_perfect": True},
                    {"module": "canny", "image": B64, "control_mode": "My prompt is more important"},
                ]
            }
        },
        ["control_v11p_sd15_canny"],
    )
    assert [c.get("model") for c in fields["controls"]] == [None, None]  # automatic: the installed one that fits
    assert ignored == [
        "controlnet model other_canny (not installed; the one fitting the model used)",
        "controlnet pixel_perfect",
        "controlnet control_mode",
    ]
    assert controlnet_fields({"dynamic_thresholding": {"args": []}}, []) == ({}, [])
