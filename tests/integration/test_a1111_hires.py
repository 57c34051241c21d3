"""The AUTOMATIC1111 face's hires fix: txt2img's ``enable_hr``, ``hr_scale``/``hr_resize_x/y``, ``hr_upscaler`` (A1111's
names, or an installed upscaler's), ``denoising_strength`` and ``hr_second_pass_steps`` become the job's ``hires``
(what the diffusers engine runs), an unknown upscaler is refused in A1111's error shape, and /upscalers and
/latent-upscale-modes list what hires fix takes. The jobs are only queued here (no worker): their params are
what is checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.compat.a1111_models import Txt2ImgRequest
from studiolo.services import Services
from tests.helpers import app_with, auth_headers
from tests.tiny_esrgan import make_rrdb
from tests.tiny_pipeline import make_tiny_sd_pipeline


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture
def face(settings_factory: Any, tiny_sd: Path, tmp_path: Path) -> Iterator[tuple[Services, TestClient]]:
    # A short wait: no worker runs the job, the call answers 504 job_still_running and the job stays queued.
    with app_with(settings_factory, compat_wait_seconds=0.05) as (services, client):
        client.headers.update(auth_headers(services))
        services.catalog.import_path(tiny_sd, model_id="tiny-sd", copy=False)
        services.catalog.import_path(make_rrdb(tmp_path / "4x_tiny.safetensors"), model_id="4x-tiny")
        yield services, client


def _txt2img(client: TestClient, **body: Any) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
    """(status, body, the queued job's params or None) of a txt2img with the tiny SD model."""
    before = {j["id"] for j in client.get("/api/v1/jobs").json()["items"]}
    request = {
        "prompt": "a lighthouse",
        "width": 64,
        "height": 64,
        "steps": 2,
        "override_settings": {"sd_model_checkpoint": "tiny-sd"},
        **body,
    }
    r = client.post("/sdapi/v1/txt2img", json=request)
    new = [j for j in client.get("/api/v1/jobs").json()["items"] if j["id"] not in before]
    return r.status_code, r.json(), (new[0]["params"] if new else None)


@pytest.mark.parametrize(
    ("fields", "hires"),
    [
        (
            {"hr_scale": 2, "hr_upscaler": "4x-tiny", "denoising_strength": 0.4, "hr_second_pass_steps": 3},
            {"scale": 2.0, "upscaler": "4x-tiny", "strength": 0.4, "steps": 3, "width": 128, "height": 128},
        ),
        (
            {"hr_scale": 1.5, "hr_upscaler": "Latent (nearest-exact)"},
            {"scale": 1.5, "upscaler": "latent", "strength": 0.75, "steps": 2, "width": 96, "height": 96},
        ),
        ({"hr_upscaler": "None"}, {"scale": 2.0, "upscaler": "lanczos", "width": 128, "height": 128}),
        ({"hr_upscaler": "Lanczos", "hr_resize_x": 96}, {"scale": 1.5, "upscaler": "lanczos", "width": 96}),
        ({}, {"upscaler": "latent"}),  # A1111's default hires upscaler is "Latent"
        ({"hr_upscaler": "Lanczos + sharpen", "hr_resize_y": 128}, {"scale": 2.0, "upscaler": "lanczos"}),
    ],
)
def test_hires_fields_become_the_jobs_hires(
    face: tuple[Services, TestClient], fields: dict[str, Any], hires: dict[str, Any]
) -> None:
    _services, client = face
    status, body, params = _txt2img(client, enable_hr=True, **fields)
    assert status == 504 and body["error"] == "job_still_running", body
    assert params is not None and params["hires"] is not None
    assert {k: params["hires"][k] for k in hires} == hires
    assert (params["width"], params["height"]) == (64, 64)  # the first pass's size


def test_without_enable_hr_there_is_no_hires(face: tuple[Services, TestClient]) -> None:
    _services, client = face
    _status, _body, params = _txt2img(client, hr_scale=2, hr_upscaler="4x-tiny")
    assert params is not None and not params.get("hires")


def test_an_unknown_upscaler_is_refused_in_a1111s_shape(face: tuple[Services, TestClient]) -> None:
    _services, client = face
    status, body, params = _txt2img(client, enable_hr=True, hr_upscaler="4x-UltraSharp")
    assert status == 422 and params is None  # nothing queued
    assert body["error"] == "unknown_upscaler" and "4x-UltraSharp" in body["detail"] and "4x-tiny" in body["detail"]
    assert set(body) == {"error", "detail", "body", "errors"}


def test_upscaler_lists_show_what_is_installed(face: tuple[Services, TestClient]) -> None:
    _services, client = face
    upscalers = client.get("/sdapi/v1/upscalers").json()
    assert [(u["name"], u["model_name"], u["scale"]) for u in upscalers] == [
        ("None", None, 4.0),
        ("Lanczos + sharpen", "lanczos", 4.0),
        ("4x-tiny", "4x-tiny", 4.0),
    ]
    modes = [m["name"] for m in client.get("/sdapi/v1/latent-upscale-modes").json()]
    assert modes[0] == "Latent" and "Latent (nearest-exact)" in modes


def test_what_studiolo_does_differently_is_named() -> None:
    """Both hr_resize sides with another aspect ratio: A1111 would crop, Studiolo covers them (scale of the larger
    side) and says so; A1111's other latent modes and "Nearest" are named as replaced by Studiolo's one of each."""
    req = Txt2ImgRequest(enable_hr=True, width=64, height=64, hr_resize_x=96, hr_resize_y=160)
    assert req.hires_scale() == 2.5 and "hr_resize crop" in req.ignored()
    assert Txt2ImgRequest(enable_hr=True, hr_resize_x=128, hr_resize_y=128, width=64, height=64).ignored() == []
    bicubic = Txt2ImgRequest(enable_hr=True, hr_upscaler="Latent (bicubic)")
    assert bicubic.ignored() == ["hr_upscaler Latent (bicubic) (Latent used)"]
    assert Txt2ImgRequest(enable_hr=True, hr_upscaler="Latent").ignored() == []
    assert Txt2ImgRequest(enable_hr=False, hr_upscaler="Nearest").ignored() == []
    skipped = Txt2ImgRequest(enable_hr=True)
    skipped.skip_hires()
    assert skipped.ignored() == ["enable_hr"] and not skipped.wants_hires
