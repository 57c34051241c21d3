"""Another AUTOMATIC1111 server as a worker (engines/remote/a1111.py) against a local server speaking its API."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.engines.base import EngineError, GenerationCanceled, GenerationRequest, ModelRef
from studiolo.engines.remote.a1111 import A1111Engine
from studiolo.services import build_services
from tests.helpers import drain, png_bytes, wait_terminal
from tests.providers.a1111_server import A1111Server, seeded_png
from tests.providers.self_hosted import Steps, cancel_while_running, make_request, same

AUTH = "studio:s3cret"
CHECKPOINT = "sd_xl_base_1.0.safetensors"
MODEL = ModelRef(id="remote-sd", engine="a1111", source="remote", remote_model=CHECKPOINT)


@pytest.fixture(scope="module")
def server() -> Iterator[A1111Server]:
    with A1111Server(auth=AUTH) as srv:
        yield srv


@pytest.fixture
def a1111(server: A1111Server) -> Iterator[A1111Server]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def make_engine(settings_factory: Any, a1111: A1111Server) -> Iterator[Any]:
    made: list[A1111Engine] = []

    def factory(**overrides: Any) -> A1111Engine:
        values = {"provider_a1111_base_url": a1111.url, "provider_a1111_auth": AUTH, **overrides}
        engine = A1111Engine(settings_factory(**values))
        engine.poll_seconds = 0.01
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        engine.http.breaker.success()  # the breaker is shared by the process: leave it closed for the next test
        engine.close()


def request(**overrides: Any) -> GenerationRequest:
    return make_request(**{"model": MODEL, **overrides})


def test_txt2img_sends_a1111_fields_with_basic_auth_and_batches_consecutive_seeds(make_engine: Any, a1111: A1111Server):
    engine = make_engine()
    images = engine.generate(
        request(negative_prompt="fog", steps=5, guidance=6.5, sampler="dpmpp_2m", scheduler="karras"),
        Steps(),
        lambda: False,
    )
    assert [r["path"] for r in a1111.requests] == ["/sdapi/v1/txt2img"]
    sent = a1111.requests[0]
    assert sent["authorization"] == "Basic " + base64.b64encode(AUTH.encode()).decode()
    body = sent["body"]
    assert {k: body[k] for k in ("prompt", "negative_prompt", "seed", "batch_size", "steps", "cfg_scale")} == {
        "prompt": "a lighthouse",
        "negative_prompt": "fog",
        "seed": 7,
        "batch_size": 2,
        "steps": 5,
        "cfg_scale": 6.5,
    }
    assert (body["width"], body["height"], body["sampler_name"], body["scheduler"]) == (64, 48, "DPM++ 2M", "Karras")
    assert body["override_settings"] == {"sd_model_checkpoint": CHECKPOINT}
    assert body["send_images"] is True and body["save_images"] is False
    assert "subseed_strength" not in body
    assert [g.seed for g in images] == [7, 8] and all(g.cost == 0.0 for g in images)
    salt = f"{CHECKPOINT}:a lighthouse"
    assert same(images[0].image, seeded_png(7, 64, 48, salt)) and same(images[1].image, seeded_png(8, 64, 48, salt))


def test_scattered_seeds_and_variations_go_one_call_per_image(make_engine: Any, a1111: A1111Server):
    engine = make_engine()
    images = engine.generate(request(seeds=[3, 10]), Steps(), lambda: False)
    assert [(r["body"]["seed"], r["body"]["batch_size"]) for r in a1111.requests] == [(3, 1), (10, 1)]
    assert [g.seed for g in images] == [3, 10]
    alone = engine.generate(request(seeds=[10]), Steps(), lambda: False)
    assert same(alone[0].image, images[1].image)  # image k equals its seed made alone

    a1111.reset()
    varied = engine.generate(
        request(seeds=[5, 6], variation_seeds=[40, 41], variation_strength=0.3), Steps(), lambda: False
    )
    sent = [(r["body"]["seed"], r["body"]["subseed"], r["body"]["subseed_strength"]) for r in a1111.requests]
    assert sent == [(5, 40, 0.3), (6, 41, 0.3)]
    assert [(g.seed, g.variation_seed) for g in varied] == [(5, 40), (6, 41)]


def test_img2img_and_inpaint_send_init_image_mask_and_strength(make_engine: Any, a1111: A1111Server):
    engine = make_engine()
    init = Image.new("RGB", (64, 48), (10, 200, 30))
    mask = Image.new("L", (64, 48), 255)
    engine.generate(request(kind="img2img", seeds=[1], init_image=init, strength=0.4), Steps(), lambda: False)
    engine.generate(request(kind="inpaint", seeds=[1], init_image=init, mask_image=mask), Steps(), lambda: False)
    first, second = (r["body"] for r in a1111.requests)
    assert [r["path"] for r in a1111.requests] == ["/sdapi/v1/img2img", "/sdapi/v1/img2img"]
    assert first["denoising_strength"] == 0.4 and "mask" not in first
    sent = Image.open(io.BytesIO(base64.b64decode(first["init_images"][0])))
    assert sent.size == (64, 48) and sent.convert("RGB").getpixel((0, 0)) == (10, 200, 30)
    assert second["denoising_strength"] == 0.75 and second["mask"] and second["inpainting_fill"] == 1


def test_progress_is_polled_with_previews_and_cancel_interrupts(make_engine: Any, a1111: A1111Server):
    engine = make_engine()
    a1111.mode = "slow"
    steps = Steps()
    engine.generate(request(seeds=[1], steps=12), steps, lambda: False)
    assert a1111.progress_polls > 0 and steps.calls, "the engine polls /progress while the call runs"
    assert all(total == 12 and 1 <= step <= 12 for step, total, _ in steps.calls)
    assert [s for s, _, _ in steps.calls] == sorted({s for s, _, _ in steps.calls})
    assert any(isinstance(p, Image.Image) for p in steps.previews)

    a1111.reset("slow")
    watched = Steps()
    with pytest.raises(GenerationCanceled):
        engine.generate(request(seeds=[1], steps=200), watched, lambda: bool(watched.calls))
    assert a1111.interrupts == 1


@pytest.mark.parametrize(
    ("mode", "overrides", "code"),
    [
        ("good", {"provider_a1111_auth": "studio:wrong"}, "provider_auth_failed"),
        ("error", {"provider_max_retries": 0}, "provider_unavailable"),
        ("malformed", {}, "provider_invalid_reply"),
    ],
)
def test_failures_map_to_provider_codes(make_engine: Any, a1111: A1111Server, mode: str, overrides: Any, code: str):
    a1111.mode = mode
    with pytest.raises(EngineError) as err:
        make_engine(**overrides).generate(request(), Steps(), lambda: False)
    assert err.value.code == code
    assert "wrong" not in str(err.value)


def test_rate_limit_is_retried_after_retry_after(make_engine: Any, a1111: A1111Server):
    a1111.mode = "rate_limited"
    images = make_engine().generate(request(), Steps(), lambda: False)
    assert len(images) == 2 and len(a1111.requests) == 2


def test_model_base_url_option_and_price(make_engine: Any, a1111: A1111Server):
    engine = make_engine(provider_a1111_base_url="http://127.0.0.1:9")  # nothing listens there
    model = ModelRef(
        id="other",
        engine="a1111",
        source="remote",
        remote_model=CHECKPOINT,
        options={"base_url": a1111.url + "/", "price_per_image": 0.002},
    )
    images = engine.generate(request(model=model, seeds=[4]), Steps(), lambda: False)
    assert len(a1111.requests) == 1 and images[0].cost == 0.002


# -- end to end: the catalog, the queue, a worker --------------------------------------------------------------


@pytest.fixture
def remote_services(settings_factory: Any, a1111: A1111Server) -> Iterator[Any]:
    settings = settings_factory(provider_a1111_base_url=a1111.url, provider_a1111_auth=AUTH)
    svc = build_services(settings, upgrade_db=False)
    svc.engines["a1111"].poll_seconds = 0.01  # type: ignore[attr-defined]
    svc.catalog.add_remote("remote-sd", provider="a1111", remote_model=CHECKPOINT)
    yield svc
    svc.engines["a1111"].http.breaker.success()  # type: ignore[attr-defined]
    svc.close(timeout=10)


def submit(svc: Any, **params: Any) -> str:
    values = {"prompt": "a lighthouse", "model": "remote-sd", "size": "64x64", "steps": 3, **params}
    accepted, _ = svc.generation.submit(LOCAL_USER_ID, GenerationParams(**values), as_admin=True)
    return str(accepted.id)


def test_a_queued_job_runs_on_the_a1111_server(remote_services: Any, a1111: A1111Server):
    job_id = submit(remote_services, n=2, seed=100)
    drain(remote_services)
    view = wait_terminal(remote_services, job_id)
    assert view.status == "succeeded", view.error
    assert view.seeds == [100, 101] and len(view.outputs) == 2
    assert a1111.requests[0]["body"]["override_settings"] == {"sd_model_checkpoint": CHECKPOINT}

    init = remote_services.generation.validate_upload(png_bytes((64, 64)), field="init_image")
    accepted, _ = remote_services.generation.submit(
        LOCAL_USER_ID,
        GenerationParams(prompt="a boat", model="remote-sd", size="64x64", steps=2, strength=0.5),
        kind="img2img",
        init_image=init,
        as_admin=True,
    )
    drain(remote_services)
    assert wait_terminal(remote_services, accepted.id).status == "succeeded"
    assert a1111.requests[-1]["path"] == "/sdapi/v1/img2img"


def test_canceling_a_running_job_interrupts_the_server(remote_services: Any, a1111: A1111Server):
    a1111.mode = "slow"
    job_id = submit(remote_services, steps=150)
    cancel_while_running(remote_services, job_id, lambda: bool(a1111.requests))
    assert wait_terminal(remote_services, job_id).status == "canceled"
    assert a1111.interrupts == 1


def test_a_refused_credential_fails_the_job_with_its_code(settings_factory: Any, a1111: A1111Server):
    settings = settings_factory(provider_a1111_base_url=a1111.url, provider_a1111_auth="studio:wrong")
    svc = build_services(settings, upgrade_db=False)
    try:
        svc.catalog.add_remote("remote-sd", provider="a1111", remote_model=CHECKPOINT)
        job_id = submit(svc)
        drain(svc)
        view = wait_terminal(svc, job_id)
        assert view.status == "failed" and view.error is not None
        assert view.error.code == "provider_auth_failed"
    finally:
        svc.engines["a1111"].http.breaker.success()  # type: ignore[attr-defined]
        svc.close(timeout=10)
