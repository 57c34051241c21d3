"""What each model can do (GET /api/v1/models ``capabilities``, CONTRACTS.md), and requests for what it cannot do
refused before anything is queued; the sampling options (schedule, variation seed) kept on the job, the image and
its PNG as A1111 writes them (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from studiolo.domain.gallery import imaging
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import drain, png_bytes
from tests.tiny_pipeline import make_tiny_sd_pipeline

GEN = "/api/v1/generations"
FIELDS = {"txt2img", "img2img", "inpaint", "upscale", "max_pixels", "samplers", "schedulers", "variation_seed"}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")


@pytest.fixture
def with_diffusers(services: Services, tmp_path: Path) -> Services:
    """The tiny random SD pipeline and its inpainting-only sibling, installed."""
    services.catalog.import_path(make_tiny_sd_pipeline(tmp_path / "tiny"), model_id="tiny", copy=False)
    inpaint = make_tiny_sd_pipeline(tmp_path / "tiny-inpaint", seed=1, inpaint=True)
    services.catalog.import_path(inpaint, model_id="tiny-inpaint", copy=False)
    return services


def _models(client: TestClient) -> dict[str, dict[str, Any]]:
    r = client.get("/api/v1/models")
    assert r.status_code == 200
    return {m["id"]: m["capabilities"] for m in r.json()["items"]}


def _jobs(services: Services) -> int:
    with services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_every_model_reports_its_capabilities(client: TestClient, with_diffusers: Services) -> None:
    caps = _models(client)
    assert all(set(c) == FIELDS for c in caps.values())
    max_pixels = with_diffusers.settings.max_pixels
    assert caps["studiolo-demo"] == {
        "txt2img": True,
        "img2img": True,
        "inpaint": True,
        "upscale": False,
        "max_pixels": max_pixels,
        "samplers": ["euler"],
        "schedulers": [],
        "variation_seed": True,
    }
    assert caps["echo"]["img2img"] and caps["echo"]["inpaint"] and caps["echo"]["variation_seed"]
    tiny = caps["tiny"]
    assert (tiny["txt2img"], tiny["img2img"], tiny["inpaint"], tiny["upscale"]) == (True, True, True, False)
    assert "dpmpp_2m" in tiny["samplers"] and "karras" in tiny["schedulers"] and tiny["variation_seed"]
    inpaint_only = caps["tiny-inpaint"]
    assert (inpaint_only["txt2img"], inpaint_only["img2img"], inpaint_only["inpaint"]) == (False, False, True)
    assert not inpaint_only["variation_seed"]


@pytest.mark.parametrize(
    ("body", "files", "code"),
    [
        ({"model": "tiny-inpaint"}, None, "unsupported_task"),
        ({"model": "tiny-inpaint"}, "init", "unsupported_task"),
        ({"model": "studiolo-demo", "scheduler": "karras"}, None, "invalid_scheduler"),
        ({"model": "tiny", "scheduler": "warp"}, None, "invalid_scheduler"),
        ({"model": "tiny", "variation_strength": 0.5}, "init", "unsupported_variation"),
    ],
)
def test_what_a_model_cannot_do_is_refused_before_queueing(
    client: TestClient, with_diffusers: Services, body: dict[str, Any], files: str | None, code: str
) -> None:
    params = {"prompt": "a fox", "size": "64x64", "steps": 2, **body}
    if files:
        upload = {"init_image": ("in.png", png_bytes((64, 64)), "image/png")}
        r = client.post(GEN, data={"params": json.dumps(params)}, files=upload)
    else:
        r = client.post(GEN, json=params)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    assert _jobs(with_diffusers) == 0


def test_schedule_and_variation_are_kept_on_the_job_the_image_and_its_png(
    client: TestClient, services: Services
) -> None:
    body = {
        "prompt": "a lighthouse",
        "size": "64x64",
        "steps": 2,
        "n": 2,
        "seed": 10,
        "scheduler": "Karras",  # as A1111 writes it: read as karras
        "variation_seed": 500,
        "variation_strength": 0.25,
    }
    r = client.post(GEN, json=body)
    assert r.status_code == 202, r.text
    job = client.get(f"/api/v1/jobs/{r.json()['id']}").json()
    assert job["params"]["scheduler"] == "karras"
    assert (job["params"]["variation_seed"], job["params"]["variation_strength"]) == (500, 0.25)
    drain(services)
    job = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded"
    for k, output in enumerate(job["outputs"]):
        image = client.get(f"/api/v1/images/{output['image_id']}").json()
        meta = image["metadata"]
        assert (meta["scheduler"], meta["variation_seed"], meta["variation_strength"]) == ("karras", 500 + k, 0.25)
        png = client.get(f"/api/v1/images/{output['image_id']}/file").content
        parameters, _ = imaging.read_png_metadata(png)
        assert parameters is not None
        read = imaging.parse_a1111_parameters(parameters)
        assert read["Schedule type"] == "Karras" and read["Seed"] == str(10 + k)
        assert read["Variation seed"] == str(500 + k) and read["Variation seed strength"] == "0.25"


def test_a_variation_strength_without_a_seed_draws_one_and_none_without_strength(
    client: TestClient, services: Services
) -> None:
    drawn = client.post(GEN, json={"prompt": "a", "size": "64x64", "steps": 2, "variation_strength": 0.5}).json()
    plain = client.post(GEN, json={"prompt": "a", "size": "64x64", "steps": 2, "variation_seed": 9}).json()
    drawn_params = client.get(f"/api/v1/jobs/{drawn['id']}").json()["params"]
    plain_params = client.get(f"/api/v1/jobs/{plain['id']}").json()["params"]
    assert isinstance(drawn_params["variation_seed"], int) and drawn_params["variation_strength"] == 0.5
    assert plain_params["variation_seed"] is None and plain_params["variation_strength"] == 0.0
    assert plain_params["scheduler"] is None  # automatic
    blank = client.post(GEN, json={"prompt": "a", "size": "64x64", "steps": 2, "scheduler": " "})
    assert blank.status_code == 202 and client.get(blank.headers["location"]).json()["params"]["scheduler"] is None
    drain(services)
    image_id = client.get(f"/api/v1/jobs/{plain['id']}").json()["outputs"][0]["image_id"]
    parameters, _ = imaging.read_png_metadata(client.get(f"/api/v1/images/{image_id}/file").content)
    assert parameters is not None and "Variation seed" not in parameters and "Schedule type" not in parameters


def test_regenerating_the_same_seed_keeps_its_variation(client: TestClient, services: Services) -> None:
    body = {"prompt": "a", "size": "64x64", "steps": 2, "n": 2, "seed": 3, "variation_seed": 40}
    job = client.post(GEN, json={**body, "variation_strength": 0.6, "scheduler": "exponential"}).json()
    drain(services)
    second = client.get(f"/api/v1/jobs/{job['id']}").json()["outputs"][1]["image_id"]
    again = client.post(f"/api/v1/images/{second}/regenerate", json={"seed": "same"})
    assert again.status_code == 202, again.text
    params = client.get(f"/api/v1/jobs/{again.json()['id']}").json()["params"]
    assert (params["seed"], params["variation_seed"], params["variation_strength"]) == (4, 41, 0.6)
    assert params["scheduler"] == "exponential"
    drain(services)
    redone = client.get(f"/api/v1/jobs/{again.json()['id']}").json()["outputs"][0]["image_id"]
    first_png = client.get(f"/api/v1/images/{second}/file?size=300").content
    again_png = client.get(f"/api/v1/images/{redone}/file?size=300").content
    assert first_png == again_png  # the same picture
