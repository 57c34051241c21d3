"""Upscale as a job kind: POST /images/{id}/upscale queues a job whose output is a new gallery image linked to its
source (parent_id), with the source's prompt and settings and its own size; checked for the owner only, with clear
4xx errors, idempotency keys and the generation rate limit, like /generations."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.served import ServedModels
from studiolo.engines.demo.engine import DEMO_MODEL_ID
from studiolo.engines.upscale import upscale_image
from studiolo.errors import Conflict
from studiolo.services import Services
from tests.helpers import app_with, auth_headers, create_user, drain
from tests.tiny_pipeline import make_tiny_upscale_pipeline

UPSCALE = "/api/v1/images/{}/upscale"


def _generate(client: TestClient, services: Services, **params: Any) -> str:
    body = {"prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2, "seed": 7, "tags": ["coast"], **params}
    job = client.post("/api/v1/generations", json=body).json()
    drain(services)
    view = client.get(job["urls"]["get"]).json()
    assert view["status"] == "succeeded", view
    return str(view["outputs"][0]["image_id"])


def _upscale(client: TestClient, services: Services, image_id: str, **body: Any) -> dict[str, Any]:
    r = client.post(UPSCALE.format(image_id), json=body)
    assert r.status_code == 202, r.text
    drain(services)
    view: dict[str, Any] = client.get(r.json()["urls"]["get"]).json()
    return view


def _png(client: TestClient, image_id: str) -> Image.Image:
    r = client.get(f"/api/v1/images/{image_id}/file")
    assert r.status_code == 200
    return Image.open(io.BytesIO(r.content))


def test_upscaling_makes_a_new_image_linked_to_its_source(client: TestClient, services: Services) -> None:
    source_id = _generate(client, services, style="watercolor", negative_prompt="fog")
    source = client.get(f"/api/v1/images/{source_id}").json()
    r = client.post(UPSCALE.format(source_id), json={"factor": 2})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert r.headers["Location"] == r.json()["urls"]["get"]
    drain(services)
    job = client.get(r.json()["urls"]["get"]).json()
    assert job["kind"] == "upscale" and job["status"] == "succeeded", job
    assert job["model"] == "lanczos" and job["progress"] == {"step": 1, "total": 1, "image": 0, "images": 1}
    params = job["params"]
    assert (params["source_image_id"], params["factor"], params["upscaler"]) == (source_id, 2, "lanczos")
    assert (params["width"], params["height"]) == (128, 128)

    child = client.get(f"/api/v1/images/{job['outputs'][0]['image_id']}").json()
    assert child["parent_id"] == source_id and source["parent_id"] is None
    assert child["kind"] == "upscale" and (child["width"], child["height"]) == (128, 128)
    for field in ("prompt", "negative_prompt", "style", "model", "seed", "steps", "guidance", "sampler", "tags"):
        assert child[field] == source[field], field
    meta = child["metadata"]
    assert (meta["upscaler"], meta["upscale_factor"], meta["parent_id"]) == ("lanczos", 2, source_id)
    assert meta["final_prompt"] == source["metadata"]["final_prompt"] and meta["job_id"] == job["id"]

    png = _png(client, child["id"])
    assert png.size == (128, 128)
    parameters = png.text["parameters"]
    assert parameters.startswith(source["metadata"]["final_prompt"])
    assert "Size: 128x128" in parameters and f"Seed: {source['seed']}" in parameters
    assert parameters.endswith("Postprocess upscaler: Lanczos + sharpen, Postprocess upscale by: 2")
    # The pixels are the source's, enlarged by the built-in upscaler.
    expected = upscale_image(_png(client, source_id).convert("RGB"), 128, 128)
    assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(expected))
    # Searchable and listed like any image.
    listed = [i["id"] for i in client.get("/api/v1/images", params={"q": "lighthouse"}).json()["items"]]
    assert child["id"] in listed and source_id in listed


def test_factor_four_and_an_upscale_of_an_upscale(client: TestClient, services: Services) -> None:
    source_id = _generate(client, services)
    job = _upscale(client, services, source_id, factor=4)
    child_id = job["outputs"][0]["image_id"]
    assert _png(client, child_id).size == (256, 256)
    grandchild = _upscale(client, services, child_id, factor=2)
    image = client.get(f"/api/v1/images/{grandchild['outputs'][0]['image_id']}").json()
    assert image["parent_id"] == child_id and (image["width"], image["height"]) == (512, 512)


def test_upscalers_lists_lanczos(client: TestClient) -> None:
    r = client.get("/api/v1/upscalers")
    assert r.status_code == 200
    assert r.json()["items"] == [{"id": "lanczos", "name": "Lanczos + sharpen", "factors": [2, 4]}]
    # An upscaler is not a model to draw with.
    assert "lanczos" not in [m["id"] for m in client.get("/api/v1/models").json()["items"]]


def test_another_users_image_is_not_found(client: TestClient, services: Services) -> None:
    source_id = _generate(client, services)
    intruder = create_user(services, "intruder@example.test")
    r = client.post(UPSCALE.format(source_id), json={"factor": 2}, headers=auth_headers(services, intruder))
    assert r.status_code == 404 and r.json()["error"]["code"] == "image_not_found"
    assert client.post(UPSCALE.format("no-such-image"), json={}).status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"factor": 3}, "invalid_upscale_factor"),
        ({"factor": 8}, "invalid_upscale_factor"),
        ({"factor": "twice"}, "invalid_input"),
        ({"factor": 2, "upscaler": "real-esrgan"}, "unknown_upscaler"),
        ({"factor": 2, "upscaler": "echo"}, "unknown_upscaler"),  # a model that draws, not an upscaler
        ({"factor": 2, "scale": 2}, "invalid_input"),
    ],
)
def test_bad_requests_are_refused_with_their_code(
    client: TestClient, services: Services, body: dict[str, Any], code: str
) -> None:
    source_id = _generate(client, services)
    r = client.post(UPSCALE.format(source_id), json=body)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert [j["kind"] for j in client.get("/api/v1/jobs").json()["items"]] == ["txt2img"]


def test_a_result_over_the_allowed_pixels_is_refused(settings_factory: Any) -> None:
    with app_with(settings_factory, max_pixels=128 * 128) as (services, api):
        api.headers.update(auth_headers(services))
        source_id = _generate(api, services)
        r = api.post(UPSCALE.format(source_id), json={"factor": 4})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "image_too_large"
        assert (error["details"]["width"], error["details"]["height"], error["details"]["max_pixels"]) == (
            256,
            256,
            128 * 128,
        )
        assert api.post(UPSCALE.format(source_id), json={"factor": 2}).status_code == 202  # exactly at the limit


def test_idempotency_key_is_honoured(client: TestClient, services: Services) -> None:
    source_id = _generate(client, services)
    headers = {"Idempotency-Key": "upscale-once"}
    first = client.post(UPSCALE.format(source_id), json={"factor": 2}, headers=headers)
    again = client.post(UPSCALE.format(source_id), json={"factor": 2}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    other = client.post(UPSCALE.format(source_id), json={"factor": 4}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    # The same key on /generations is another request: refused, not replayed as the upscale.
    r = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64"}, headers=headers)
    assert r.status_code == 409
    assert [j["kind"] for j in client.get("/api/v1/jobs").json()["items"]] == ["upscale", "txt2img"]


def test_upscales_count_against_the_generation_rate_limit(settings_factory: Any) -> None:
    with app_with(settings_factory, rate_limits_enabled=True, rate_limit_generate="2/minute") as (services, api):
        api.headers.update(auth_headers(services))
        source_id = _generate(api, services)  # the first of two
        assert api.post(UPSCALE.format(source_id), json={"factor": 2}).status_code == 202
        r = api.post(UPSCALE.format(source_id), json={"factor": 2})
        assert r.status_code == 429, r.text


def test_a_source_purged_before_the_job_runs_fails_the_job(client: TestClient, services: Services) -> None:
    source_id = _generate(client, services)
    job = client.post(UPSCALE.format(source_id), json={"factor": 2}).json()
    assert client.delete(f"/api/v1/images/{source_id}", params={"permanent": "true"}).status_code == 204
    drain(services)
    view = client.get(job["urls"]["get"]).json()
    assert view["status"] == "failed" and view["attempts"] == 1
    assert view["error"]["code"] == "source_image_missing" and source_id in view["error"]["message"]
    # Retrying finds it gone again: a failed job, never a crash.
    assert client.post(f"/api/v1/jobs/{job['id']}/retry").status_code == 202
    drain(services)
    assert client.get(job["urls"]["get"]).json()["error"]["code"] == "source_image_missing"


def test_a_source_whose_file_is_gone_fails_the_job(client: TestClient, services: Services) -> None:
    source_id = _generate(client, services)
    job = client.post(UPSCALE.format(source_id), json={"factor": 2}).json()
    key, _ = services.gallery.file(LOCAL_USER_ID, source_id, "original")
    services.store.delete(key)
    drain(services)
    assert client.get(job["urls"]["get"]).json()["error"]["code"] == "source_image_missing"


def test_purging_the_source_keeps_the_upscale(client: TestClient, services: Services) -> None:
    source_id = _generate(client, services)
    child_id = _upscale(client, services, source_id, factor=2)["outputs"][0]["image_id"]
    assert client.delete(f"/api/v1/images/{source_id}", params={"permanent": "true"}).status_code == 204
    child = client.get(f"/api/v1/images/{child_id}").json()
    assert child["parent_id"] is None and (child["width"], child["height"]) == (128, 128)


def test_a_canceled_upscale_can_be_retried(client: TestClient, services: Services) -> None:
    source_id = _generate(client, services)
    job = client.post(UPSCALE.format(source_id), json={"factor": 2}).json()
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"
    r = client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert r.status_code == 202 and r.json()["id"] == job["id"]
    drain(services)
    view = client.get(job["urls"]["get"]).json()
    assert view["status"] == "succeeded" and len(view["outputs"]) == 1
    assert client.get(f"/api/v1/images/{view['outputs'][0]['image_id']}").json()["parent_id"] == source_id


def test_separate_workers_serve_the_built_in_upscaler(services: Services) -> None:
    served = ServedModels(services.catalog)
    served.refresh()
    assert "lanczos" in served.current()
    only = ServedModels(services.catalog, ["lanczos"])
    only.refresh()
    assert only.current() == ["lanczos"]


@pytest.mark.usefixtures("one_torch_thread")
def test_an_imported_upscaler_model_upscales_through_the_queue(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    """`studiolo models import` of diffusers' SD x4 upscaler (a tiny random one): listed as an upscaler with its
    factor, refused for drawing, and run by the worker through the model loader."""
    source_id = _generate(client, services)
    info = services.catalog.import_path(make_tiny_upscale_pipeline(tmp_path / "x4"), model_id="tiny-x4")
    assert info.arch == "sd-x4-upscaler"
    upscalers = client.get("/api/v1/upscalers").json()["items"]
    assert upscalers[1:] == [{"id": "tiny-x4", "name": "tiny-x4", "factors": [4]}]
    r = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "model": "tiny-x4"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_task"
    r = client.post(UPSCALE.format(source_id), json={"factor": 2, "upscaler": "tiny-x4"})
    assert r.status_code == 422 and r.json()["error"]["details"]["factors"] == [4]

    job = _upscale(client, services, source_id, factor=4, upscaler="tiny-x4")
    assert job["status"] == "succeeded", job
    assert job["model"] == "tiny-x4" and job["progress"]["total"] == job["params"]["steps"] > 1
    child = client.get(f"/api/v1/images/{job['outputs'][0]['image_id']}").json()
    assert child["parent_id"] == source_id and (child["width"], child["height"]) == (256, 256)
    assert child["model"] == "echo" and child["metadata"]["upscaler"] == "tiny-x4"
    assert (
        _png(client, child["id"])
        .text["parameters"]
        .endswith("Postprocess upscaler: tiny-x4, Postprocess upscale by: 4")
    )


def test_an_upscaler_never_becomes_the_default_model(settings_factory: Any, tmp_path: Path) -> None:
    with app_with(settings_factory, default_model="not/installed") as (services, _api):
        fallback = services.catalog.default_model_id()
        services.catalog.import_path(make_tiny_upscale_pipeline(tmp_path / "x4"), model_id="tiny-x4")
        assert fallback == DEMO_MODEL_ID  # a fresh install draws with the demo model...
        assert services.catalog.default_model_id() == DEMO_MODEL_ID  # ... and still does with only an upscaler


def test_regenerating_an_upscale_upscales_its_source_again(client: TestClient, services: Services) -> None:
    source_id = _generate(client, services)
    first = _upscale(client, services, source_id, factor=4)["outputs"][0]["image_id"]
    r = client.post(f"/api/v1/images/{first}/regenerate", json={"seed": "new"})
    assert r.status_code == 202, r.text
    drain(services)
    job = client.get(r.json()["urls"]["get"]).json()
    assert job["kind"] == "upscale" and job["status"] == "succeeded"
    assert (job["params"]["source_image_id"], job["params"]["factor"]) == (source_id, 4)
    again = client.get(f"/api/v1/images/{job['outputs'][0]['image_id']}").json()
    assert again["parent_id"] == source_id and again["id"] != first
    assert np.array_equal(np.asarray(_png(client, again["id"])), np.asarray(_png(client, first)))

    assert client.delete(f"/api/v1/images/{source_id}", params={"permanent": "true"}).status_code == 204
    r = client.post(f"/api/v1/images/{first}/regenerate", json={"seed": "same"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "input_missing"


def test_an_upscaler_model_cannot_be_made_the_default(services: Services, tmp_path: Path) -> None:
    folder = make_tiny_upscale_pipeline(tmp_path / "x4")
    with pytest.raises(Conflict) as refused:
        services.catalog.import_path(folder, model_id="tiny-x4", default=True)
    assert refused.value.code == "model_is_upscaler" and not (services.settings.models_dir / "tiny-x4").exists()
    services.catalog.import_path(folder, model_id="tiny-x4")
    with pytest.raises(Conflict) as refused:
        services.catalog.set_default("tiny-x4")
    assert refused.value.code == "model_is_upscaler"
