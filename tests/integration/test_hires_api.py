"""Hires fix through the API (issue 19): POST /api/v1/generations with ``hires`` on a tiny diffusers model, run by
the worker; the job keeps its settings, the gallery image has the final size; what it cannot do is refused."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import drain, png_bytes
from tests.tiny_pipeline import make_tiny_sd_pipeline

GEN = "/api/v1/generations"
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture
def tiny(services: Services, tmp_path: Path) -> Services:
    services.catalog.import_path(make_tiny_sd_pipeline(tmp_path / "tiny"), model_id="tiny", copy=False)
    return services


def _jobs(services: Services) -> int:
    with services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_hires_job_makes_images_of_the_final_size(client: TestClient, tiny: Services) -> None:
    body = {
        "model": "tiny",
        "prompt": "a harbour at night",
        "size": "80x64",
        "steps": 2,
        "n": 2,
        "seed": 11,
        "sampler": "euler",
        "hires": {"scale": 2, "upscaler": "latent", "strength": 0.6, "steps": 2},
    }
    r = client.post(GEN, json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    params = client.get(f"/api/v1/jobs/{job_id}").json()["params"]
    assert (params["width"], params["height"]) == (80, 64)  # the first pass
    assert params["hires"] == {
        "scale": 2.0,
        "upscaler": "latent",
        "strength": 0.6,
        "steps": 2,
        "width": 160,
        "height": 128,
    }
    drain(tiny)
    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert len(job["outputs"]) == 2
    for output in job["outputs"]:
        png = client.get(f"/api/v1/images/{output['image_id']}/file").content
        assert Image.open(io.BytesIO(png)).size == (160, 128)


def test_hires_on_img2img_or_past_the_pixel_limit_is_refused(client: TestClient, tiny: Services) -> None:
    params = {"model": "tiny", "prompt": "a fox", "size": "64x64", "steps": 2, "hires": {"scale": 2}}
    upload = {"init_image": ("in.png", png_bytes((64, 64)), "image/png")}
    r = client.post(GEN, data={"params": json.dumps(params)}, files=upload)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "hires_unsupported"

    limit = tiny.settings.max_pixels
    side = int(limit**0.5) // 8 * 8  # the first pass fits, twice its size does not
    big = {**params, "size": f"{side}x{side}"}
    r = client.post(GEN, json=big)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "image_too_large" and error["details"]["field"] == "hires", error
    r = client.post(GEN, json={**params, "hires": {"scale": 2, "upscaler": "nearest"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_upscaler"
    assert _jobs(tiny) == 0


def test_a_hires_job_enlarges_with_an_installed_esrgan_upscaler(
    client: TestClient, tiny: Services, tmp_path: Path
) -> None:
    """The hires pass's enlargement by an upscaler model: the worker runs it on the engine that serves it (esrgan), and
    its picture differs from a Lanczos enlargement's with everything else the same."""
    from tests.tiny_esrgan import make_rrdb

    tiny.catalog.import_path(make_rrdb(tmp_path / "4x_tiny.safetensors"), model_id="4x-tiny")
    base = {"model": "tiny", "prompt": "a harbour", "size": "64x64", "steps": 2, "seed": 3}
    pictures = []
    for upscaler in ("4x-tiny", "lanczos"):
        r = client.post(GEN, json={**base, "hires": {"scale": 2, "upscaler": upscaler, "strength": 0.3, "steps": 2}})
        assert r.status_code == 202, r.text
        drain(tiny)
        job = client.get(f"/api/v1/jobs/{r.json()['id']}").json()
        assert job["status"] == "succeeded", job
        png = client.get(f"/api/v1/images/{job['outputs'][0]['image_id']}/file").content
        picture = Image.open(io.BytesIO(png))
        assert picture.size == (128, 128)
        assert "Hires upscaler: " + ("4x-tiny" if upscaler == "4x-tiny" else "Lanczos") in picture.info["parameters"]
        pictures.append(picture.convert("RGB").tobytes())
    assert pictures[0] != pictures[1]
