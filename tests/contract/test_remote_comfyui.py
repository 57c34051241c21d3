"""A ComfyUI server as a worker (engines/remote/comfyui.py) against a local server speaking ComfyUI's API."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.engines.base import EngineError, GenerationCanceled, GenerationRequest, ModelLoadError, ModelRef
from studiolo.engines.remote.comfyui import ComfyUIEngine
from studiolo.engines.remote.comfyui_workflow import builtin_template
from studiolo.services import build_services
from tests.helpers import drain, png_bytes, wait_terminal
from tests.providers.a1111_server import seeded_png
from tests.providers.comfyui_server import ComfyUIServer
from tests.providers.self_hosted import Steps, cancel_while_running, make_request, same

CHECKPOINT = "sd_xl_base_1.0.safetensors"
MODEL = ModelRef(id="comfy-sd", engine="comfyui", source="remote", remote_model=CHECKPOINT)


@pytest.fixture(scope="module")
def server() -> Iterator[ComfyUIServer]:
    with ComfyUIServer() as srv:
        yield srv


@pytest.fixture
def comfy(server: ComfyUIServer) -> Iterator[ComfyUIServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def make_engine(settings_factory: Any, comfy: ComfyUIServer) -> Iterator[Any]:
    made: list[ComfyUIEngine] = []

    def factory(**overrides: Any) -> ComfyUIEngine:
        engine = ComfyUIEngine(settings_factory(**{"provider_comfyui_base_url": comfy.url, **overrides}))
        engine.poll_seconds = 0.02
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        engine.http.breaker.success()  # shared by the process: leave it closed for the next test
        engine.close()


def request(**overrides: Any) -> GenerationRequest:
    return make_request(**{"model": MODEL, **overrides})


def test_builtin_txt2img_queues_one_prompt_per_seed_and_follows_the_websocket(make_engine: Any, comfy: ComfyUIServer):
    engine = make_engine()
    steps = Steps()
    images = engine.generate(
        request(negative_prompt="fog", steps=4, guidance=6.5, sampler="dpmpp_2m_karras"), steps, lambda: False
    )
    assert len(comfy.prompts) == 2 and comfy.ws_connections == 1
    first = comfy.prompts[0]
    assert first["client_id"] and first["client_id"] == comfy.prompts[1]["client_id"]
    graph = first["prompt"]
    assert graph["4"]["inputs"]["ckpt_name"] == CHECKPOINT
    assert (graph["6"]["inputs"]["text"], graph["7"]["inputs"]["text"]) == ("a lighthouse", "fog")
    assert graph["5"]["inputs"] == {"width": 64, "height": 48, "batch_size": 1}
    sampler = {k: v for k, v in graph["3"]["inputs"].items() if not isinstance(v, list)}
    assert sampler == {
        "seed": 7,
        "steps": 4,
        "cfg": 6.5,
        "sampler_name": "dpmpp_2m",
        "scheduler": "karras",
        "denoise": 1.0,
    }
    assert comfy.prompts[1]["prompt"]["3"]["inputs"]["seed"] == 8
    assert [g.seed for g in images] == [7, 8] and all(g.cost == 0.0 for g in images)
    assert same(images[1].image, seeded_png(8, 64, 48, "a lighthouse:1.0"))
    assert steps.calls == [(s, 4, i) for i in (1, 2) for s in range(1, 5)]
    assert all(isinstance(p, Image.Image) for p in steps.previews), "binary preview frames become previews"
    alone = engine.generate(request(seeds=[8], negative_prompt="fog", steps=4), Steps(), lambda: False)
    assert same(alone[0].image, images[1].image)


def test_img2img_and_inpaint_upload_their_images(make_engine: Any, comfy: ComfyUIServer):
    engine = make_engine()
    init = Image.new("RGB", (32, 32), (10, 200, 30))
    mask = Image.new("L", (32, 32), 255)
    (made,) = engine.generate(request(kind="img2img", seeds=[3], init_image=init, strength=0.4), Steps(), lambda: False)
    graph = comfy.prompts[-1]["prompt"]
    assert graph["10"]["class_type"] == "LoadImage" and graph["10"]["inputs"]["image"] in comfy.uploads
    assert graph["3"]["inputs"]["denoise"] == 0.4 and graph["3"]["inputs"]["latent_image"] == ["11", 0]
    uploaded = Image.open(io.BytesIO(comfy.uploads[graph["10"]["inputs"]["image"]]))
    assert uploaded.size == (64, 48), "the init image goes at the job's size"
    expected = seeded_png(3, 64, 48, "a lighthouse:0.4", init.resize((64, 48)))
    assert same(made.image, expected)

    engine.generate(request(kind="inpaint", seeds=[3], init_image=init, mask_image=mask), Steps(), lambda: False)
    graph = comfy.prompts[-1]["prompt"]
    assert graph["12"]["class_type"] == "LoadImageMask" and graph["12"]["inputs"]["image"] in comfy.uploads
    assert graph["3"]["inputs"]["latent_image"] == ["13", 0]


def test_a_custom_workflow_gets_typed_placeholders(make_engine: Any, comfy: ComfyUIServer, tmp_path: Path):
    graph = builtin_template("txt2img")
    graph["6"]["inputs"]["text"] = "masterpiece, {{prompt}}"
    graph["5"]["inputs"]["width"] = "{{height}}"  # a portrait flow that swaps the sides
    graph["5"]["inputs"]["height"] = "{{width}}"
    graph["9"]["inputs"]["filename_prefix"] = "flow_{{seed}}"
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(graph))
    model = ModelRef(
        id="flow", engine="comfyui", source="remote", remote_model=CHECKPOINT, options={"workflow": str(path)}
    )
    engine = make_engine()
    caps = engine.capabilities(model)
    assert caps.txt2img and not caps.img2img and not caps.inpaint
    (made,) = engine.generate(request(model=model, seeds=[5]), Steps(), lambda: False)
    sent = comfy.prompts[-1]["prompt"]
    assert sent["6"]["inputs"]["text"] == "masterpiece, a lighthouse"
    assert (sent["5"]["inputs"]["width"], sent["5"]["inputs"]["height"]) == (48, 64)
    assert sent["3"]["inputs"]["seed"] == 5 and sent["9"]["inputs"]["filename_prefix"] == "flow_5"
    assert made.image.size == (48, 64)

    path.write_text(json.dumps({"1": {"class_type": "KSampler", "inputs": {"seed": "{{sede}}"}}}))
    with pytest.raises(ModelLoadError, match="sede"):
        engine.load(model)
    path.write_text("{not json")
    with pytest.raises(ModelLoadError, match="not JSON"):
        engine.load(model)


def test_validation_and_execution_errors_carry_comfyuis_message(make_engine: Any, comfy: ComfyUIServer):
    engine = make_engine()
    unknown = ModelRef(id="x", engine="comfyui", source="remote", remote_model="nope.safetensors")
    with pytest.raises(EngineError) as err:
        engine.generate(request(model=unknown), Steps(), lambda: False)
    assert err.value.code == "provider_rejected"
    assert "CheckpointLoaderSimple" in str(err.value) and "nope.safetensors" in str(err.value)

    comfy.mode = "execution_error"
    with pytest.raises(EngineError) as err:
        engine.generate(request(), Steps(), lambda: False)
    assert err.value.code == "provider_rejected" and "mat1 and mat2" in str(err.value)
    assert "KSampler" in str(err.value)


def test_without_a_websocket_the_engine_polls_history(make_engine: Any, comfy: ComfyUIServer):
    comfy.mode = "ws_down"
    steps = Steps()
    images = make_engine().generate(request(), steps, lambda: False)
    assert len(images) == 2 and comfy.ws_connections == 0
    assert comfy.requests.count("GET /history") >= 2 and steps.calls == []

    comfy.reset("ws_down")
    comfy.mode = "ws_down"
    with pytest.raises(GenerationCanceled):
        make_engine().generate(request(steps=200), Steps(), lambda: True)
    # canceled before anything was queued: nothing to interrupt
    assert comfy.prompts == [] and comfy.interrupts == []


def test_cancel_interrupts_the_running_prompt(make_engine: Any, comfy: ComfyUIServer):
    comfy.mode = "slow"
    watched = Steps()
    with pytest.raises(GenerationCanceled):
        make_engine().generate(request(seeds=[1], steps=200), watched, lambda: bool(watched.calls))
    assert len(comfy.interrupts) == 1 and comfy.interrupts[0]["prompt_id"]


def test_an_unreachable_server_is_unavailable(make_engine: Any):
    engine = make_engine(provider_comfyui_base_url="http://127.0.0.1:9", provider_max_retries=0)
    with pytest.raises(EngineError) as err:
        engine.generate(request(), Steps(), lambda: False)
    assert err.value.code == "provider_unavailable"


# -- end to end: the catalog, the queue, a worker --------------------------------------------------------------


@pytest.fixture
def remote_services(settings_factory: Any, comfy: ComfyUIServer) -> Iterator[Any]:
    svc = build_services(settings_factory(provider_comfyui_base_url=comfy.url), upgrade_db=False)
    svc.engines["comfyui"].poll_seconds = 0.02  # type: ignore[attr-defined]
    svc.catalog.add_remote("comfy-sd", provider="comfyui", remote_model=CHECKPOINT, options={"price_per_image": 0.01})
    yield svc
    svc.engines["comfyui"].http.breaker.success()  # type: ignore[attr-defined]
    svc.close(timeout=10)


def submit(svc: Any, **params: Any) -> str:
    values = {"prompt": "a lighthouse", "model": "comfy-sd", "size": "64x64", "steps": 3, **params}
    accepted, _ = svc.generation.submit(LOCAL_USER_ID, GenerationParams(**values), as_admin=True)
    return str(accepted.id)


def test_a_queued_job_runs_on_the_comfyui_server(remote_services: Any, comfy: ComfyUIServer):
    job_id = submit(remote_services, n=2, seed=100)
    drain(remote_services)
    view = wait_terminal(remote_services, job_id)
    assert view.status == "succeeded", view.error
    assert view.seeds == [100, 101] and len(view.outputs) == 2
    assert [p["prompt"]["3"]["inputs"]["seed"] for p in comfy.prompts] == [100, 101]

    init = remote_services.generation.validate_upload(png_bytes((64, 64)), field="init_image")
    mask = remote_services.generation.validate_upload(png_bytes((64, 64)), field="mask_image", mode="L")
    accepted, _ = remote_services.generation.submit(
        LOCAL_USER_ID,
        GenerationParams(prompt="a boat", model="comfy-sd", size="64x64", steps=2),
        kind="inpaint",
        init_image=init,
        mask_image=mask,
        as_admin=True,
    )
    drain(remote_services)
    assert wait_terminal(remote_services, accepted.id).status == "succeeded"
    assert "SetLatentNoiseMask" in {n["class_type"] for n in comfy.prompts[-1]["prompt"].values()}


def test_canceling_a_running_job_interrupts_comfyui(remote_services: Any, comfy: ComfyUIServer):
    comfy.mode = "slow"
    job_id = submit(remote_services, steps=150)
    cancel_while_running(remote_services, job_id, lambda: bool(comfy.prompts))
    assert wait_terminal(remote_services, job_id).status == "canceled"
    assert len(comfy.interrupts) + len(comfy.deleted) == 1


def test_a_refused_workflow_fails_the_job(remote_services: Any, comfy: ComfyUIServer):
    remote_services.catalog.add_remote("comfy-missing", provider="comfyui", remote_model="missing.safetensors")
    job_id = submit(remote_services, model="comfy-missing")
    drain(remote_services)
    view = wait_terminal(remote_services, job_id)
    assert view.status == "failed" and view.error is not None
    assert view.error.code == "provider_rejected" and "missing.safetensors" in view.error.message
