"""ESRGAN-family upscaler files through the catalog and the queue: `models import` of a .safetensors RRDBNet or
compact net registers an upscaler run by the "esrgan" engine, GET /upscalers lists it, an upscale job with it makes
the model's pixels at the asked size, and it is never a model to draw with nor the default."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from studiolo.domain.generation.served import ServedModels
from studiolo.engines.base import GenerationRequest, ModelRef
from studiolo.engines.esrgan import EsrganUpscaleEngine
from studiolo.errors import Conflict, InvalidInput
from studiolo.services import Services
from tests.helpers import drain
from tests.tiny_esrgan import make_compact, make_rrdb

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UPSCALE = "/api/v1/images/{}/upscale"


def _generate(client: TestClient, services: Services) -> str:
    body = {"prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2, "seed": 7}
    job = client.post("/api/v1/generations", json=body).json()
    drain(services)
    return str(client.get(job["urls"]["get"]).json()["outputs"][0]["image_id"])


def _png(client: TestClient, image_id: str) -> Image.Image:
    return Image.open(io.BytesIO(client.get(f"/api/v1/images/{image_id}/file").content)).convert("RGB")


def _upscale(client: TestClient, services: Services, image_id: str, **body: Any) -> dict[str, Any]:
    r = client.post(UPSCALE.format(image_id), json=body)
    assert r.status_code == 202, r.text
    drain(services)
    view: dict[str, Any] = client.get(r.json()["urls"]["get"]).json()
    return view


def test_an_imported_esrgan_file_upscales_through_the_queue(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    source_id = _generate(client, services)
    file = make_rrdb(tmp_path / "4x_tiny.safetensors", layout="esrgan")
    info = services.catalog.import_path(file, model_id="tiny-esrgan")
    assert (info.arch, info.engine, info.source) == ("esrgan-x4", "esrgan", "single_file")
    assert info.path is not None and Path(info.path).name == "4x_tiny.safetensors"
    upscalers = client.get("/api/v1/upscalers").json()["items"]
    assert upscalers[1:] == [{"id": "tiny-esrgan", "name": "tiny-esrgan", "factors": [2, 4]}]
    r = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "model": "tiny-esrgan"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_task"
    served = ServedModels(services.catalog)
    served.refresh()
    assert "tiny-esrgan" in served.current()  # workers of this process take its jobs

    for factor in (4, 2):  # 2x: the x4 net, then Lanczos down to the asked size
        job = _upscale(client, services, source_id, factor=factor, upscaler="tiny-esrgan")
        assert job["status"] == "succeeded" and job["model"] == "tiny-esrgan", job
        assert (job["params"]["steps"], job["params"]["guidance"]) == (1, 0.0)  # one pass: no sampling steps
        child = client.get(f"/api/v1/images/{job['outputs'][0]['image_id']}").json()
        assert child["parent_id"] == source_id and (child["width"], child["height"]) == (64 * factor, 64 * factor)
        assert child["metadata"]["upscaler"] == "tiny-esrgan"
        # The pixels are the net's: the same file run by the engine directly gives them (plus, from 256x256 on, the
        # invisible watermark every output carries, domain/safety/invisible.py: a faint change).
        ref = ModelRef(id="direct", engine="esrgan", source="single_file", path=file)
        size = 64 * factor
        request = GenerationRequest(
            model=ref, prompt="", seeds=[0], width=size, height=size, kind="upscale", init_image=_png(client, source_id)
        )
        expected = EsrganUpscaleEngine(device="cpu").generate(request, lambda *a, **k: None, lambda: False)[0].image
        diff = np.abs(np.asarray(_png(client, child["id"]), dtype=int) - np.asarray(expected, dtype=int))
        assert int(diff.max()) == 0 if factor == 2 else float(diff.mean()) < 2.0
    assert services.engines["esrgan"].is_loaded("tiny-esrgan")


def test_a_compact_x2_net_makes_four_times_in_two_passes(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    source_id = _generate(client, services)
    services.catalog.import_path(make_compact(tmp_path / "2x_compact.safetensors", scale=2), model_id="compact")
    assert next(u for u in client.get("/api/v1/upscalers").json()["items"] if u["id"] == "compact")["factors"] == [2, 4]
    job = _upscale(client, services, source_id, factor=4, upscaler="compact")
    assert job["status"] == "succeeded", job
    assert _png(client, job["outputs"][0]["image_id"]).size == (256, 256)


def test_an_esrgan_upscaler_is_never_the_default(services: Services, tmp_path: Path) -> None:
    file = make_rrdb(tmp_path / "up.safetensors", scale=2)
    with pytest.raises(Conflict) as refused:
        services.catalog.import_path(file, model_id="up", default=True)
    assert refused.value.code == "model_is_upscaler" and not (services.settings.models_dir / "up").exists()
    services.catalog.import_path(file, model_id="up")
    with pytest.raises(Conflict) as refused_later:
        services.catalog.set_default("up")
    assert refused_later.value.code == "model_is_upscaler"
    assert services.catalog.default_model_id() != "up"


def test_a_damaged_upscaler_file_is_not_imported(services: Services, tmp_path: Path) -> None:
    file = make_rrdb(tmp_path / "up.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(file.read_bytes()[:-64])
    with pytest.raises(InvalidInput) as refused:
        services.catalog.import_path(cut, model_id="cut")
    assert refused.value.code == "model_file_corrupt"
    assert "cut" not in services.catalog.ids()
