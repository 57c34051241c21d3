"""Adapters the way a user meets them (issue 19): files imported with `studiolo models import`, a job through
POST /api/v1/generations naming a LoRA (field and prompt tag), an embedding word, a ControlNet unit, a reference
image and a hires fix, run by the real worker on the tiny random model; the PNG says it all as A1111 writes it,
PNG-info reads it back, remix (same seed) draws the same pixels, and a plain job after it draws the model's own
picture exactly (nothing left applied)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from studiolo.cli import app
from studiolo.services import Services
from tests.helpers import drain
from tests.tiny_controlnet import make_tiny_controlnet
from tests.tiny_ip_adapter import make_tiny_ip_adapter
from tests.tiny_lora import make_embedding, make_kohya_lora
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]
GEN = "/api/v1/generations"


def _edges() -> str:
    picture = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(picture).ellipse((12, 12, 52, 52), outline="black", width=3)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _import(services: Services, *args: str) -> None:
    env = {
        "STUDIOLO_DATA_DIR": str(services.settings.data_dir),
        "STUDIOLO_DATABASE_URL": services.settings.database_url,
    }
    result = CliRunner().invoke(app, ["models", "import", *args], env=env)
    assert result.exit_code == 0, result.output
    services.generation.adapters.invalidate()
    services.runner.adapters.invalidate()


def _run(client: TestClient, services: Services, body: dict[str, object]) -> dict[str, object]:
    r = client.post(GEN, json=body)
    assert r.status_code == 202, r.text
    drain(services)
    view = client.get(r.json()["urls"]["get"]).json()
    assert view["status"] == "succeeded", view
    return dict(view)


def _pixels(client: TestClient, view: dict[str, object]) -> np.ndarray:
    outputs = view["outputs"]
    assert isinstance(outputs, list)
    png = client.get(outputs[0]["url"])
    return np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))


def test_imported_adapters_run_through_the_queue_and_are_recorded(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    model = make_tiny_sd_pipeline(tmp_path / "tiny")
    services.catalog.import_path(model, model_id="tiny", copy=False)
    _import(services, str(make_kohya_lora(tmp_path / "ink-style.safetensors")))
    _import(services, str(make_embedding(tmp_path / "moody.safetensors")))
    control = make_tiny_controlnet(tmp_path / "cn", model)
    _import(services, str(control.ldm_file), "--id", "cn-canny", "--control-type", "canny")
    _import(services, str(make_tiny_ip_adapter(tmp_path / "ip", model)), "--id", "ip-tiny")
    listed = {a["id"]: a["kind"] for a in client.get("/api/v1/adapters").json()["items"]}
    assert listed == {"ink-style": "lora", "moody": "embedding", "cn-canny": "controlnet", "ip-tiny": "ip_adapter"}

    base = {"prompt": "a lighthouse, moody", "model": "tiny", "size": "64x64", "steps": 2, "seed": 5}
    plain = _pixels(client, _run(client, services, base))
    body = {
        **base,
        "prompt": "a lighthouse, moody <lora:ink-style:0.8>",
        "controls": [{"type": "canny", "image": _edges(), "strength": 0.9}],
        "reference_image": _edges(),
        "reference_strength": 0.5,
        "hires": {"scale": 1.5, "strength": 0.5, "steps": 2},
    }
    view = _run(client, services, body)
    made = _pixels(client, view)
    assert made.shape == (96, 96, 3)  # the hires fix's final size

    outputs = view["outputs"]
    assert isinstance(outputs, list)
    image_id = outputs[0]["image_id"]
    png = client.get(f"/api/v1/images/{image_id}/file").content
    text = Image.open(io.BytesIO(png)).info["parameters"]
    for said in ("<lora:ink-style:0.8>", "Lora hashes: ", "TI hashes: ", "ControlNet 0: ", "Hires upscale: 1.5"):
        assert said in text, text
    assert "Size: 64x64" in text  # A1111 writes the first pass's size
    info = client.post("/api/v1/png-info", files={"file": ("x.png", png, "image/png")}).json()
    assert info["parameters"]["hires"]["scale"] == 1.5
    assert [c["type"] for c in info["parameters"]["controls"]] == ["canny"]
    assert info["parameters"]["loras"] == [{"name": "ink-style", "weight": 0.8}]

    again = client.post(f"/api/v1/images/{image_id}/regenerate", json={"seed": "same"})
    assert again.status_code == 202, again.text
    drain(services)
    remixed = client.get(again.json()["urls"]["get"]).json()
    assert remixed["status"] == "succeeded", remixed
    assert json.dumps(remixed["params"]["controls"]) == json.dumps(_run_params(client, view)["controls"]), (
        "the remix kept the ControlNet unit"
    )
    assert np.array_equal(_pixels(client, remixed), made)  # same seed, same adapters, same pictures: same image

    after = _pixels(client, _run(client, services, base))
    assert np.array_equal(after, plain)  # nothing of the adapters stayed applied to the cached model


def _run_params(client: TestClient, view: dict[str, object]) -> dict[str, object]:
    return dict(client.get(f"/api/v1/jobs/{view['id']}").json()["params"])


def test_a_depth_unit_uses_the_installed_depth_preprocessor(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    """The worker hands the installed preprocessors to the engine, which makes the depth map with the model."""
    from tests.tiny_controlnet import make_tiny_depth_model

    model = make_tiny_sd_pipeline(tmp_path / "tiny")
    services.catalog.import_path(model, model_id="tiny", copy=False)
    control = make_tiny_controlnet(tmp_path / "cn", model)
    _import(services, str(control.folder), "--id", "cn-depth", "--control-type", "depth")
    _import(services, str(make_tiny_depth_model(tmp_path / "dpt")), "--id", "dpt-tiny")
    assert {a["id"]: a["kind"] for a in client.get("/api/v1/adapters").json()["items"]}["dpt-tiny"] == "preprocessor"
    body = {"prompt": "a harbour", "model": "tiny", "size": "64x64", "steps": 2, "seed": 1}
    view = _run(client, services, {**body, "controls": [{"type": "depth", "image": _edges()}]})
    assert _run_params(client, view)["controls"][0]["model"] == "cn-depth"
    assert not np.array_equal(_pixels(client, view), _pixels(client, _run(client, services, body)))
