"""The Stability AI engine against a local server speaking REST v2beta (tests/providers/stability_server.py)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.engines.base import EngineError, GenerationRequest, ModelRef
from studiolo.engines.remote.stability import StabilityEngine, nearest_aspect_ratio
from tests.helpers import drain, submit
from tests.providers.fake_provider import fresh_breakers, job_row, remote_services, stored_png
from tests.providers.stability_server import StabilityServer


@pytest.fixture(scope="module")
def server() -> Iterator[StabilityServer]:
    with StabilityServer() as s:
        yield s


@pytest.fixture
def stability(server: StabilityServer) -> StabilityServer:
    server.reset()
    fresh_breakers()
    return server


def make_engine(settings_factory: Any, server: StabilityServer, key: str | None = None, **overrides: Any) -> Any:
    overrides.setdefault("provider_max_retries", 2)
    settings = settings_factory(
        provider_stability_api_key=key or server.key, provider_stability_base_url=server.url, **overrides
    )
    return StabilityEngine(settings)


def request(remote: str, seeds: list[int], *, options: dict[str, object] | None = None, **kw: Any) -> GenerationRequest:
    model = ModelRef(id="st", engine="stability", source="remote", remote_model=remote, options=options or {})
    kw.setdefault("width", 64)
    kw.setdefault("height", 48)
    return GenerationRequest(model=model, prompt="a red lighthouse", seeds=seeds, **kw)


def run(engine: StabilityEngine, req: GenerationRequest) -> tuple[list[Any], list[tuple[int, int]]]:
    steps: list[tuple[int, int]] = []
    out = engine.generate(req, lambda step, total, **_: steps.append((step, total)), lambda: False)
    return out, steps


def test_nearest_aspect_ratio() -> None:
    assert nearest_aspect_ratio(512, 512) == "1:1"
    assert nearest_aspect_ratio(1024, 576) == "16:9"
    assert nearest_aspect_ratio(832, 1216) == "2:3"
    assert nearest_aspect_ratio(64, 48) == "5:4"  # 4:3 is not offered: 5:4 is nearer than 3:2
    assert nearest_aspect_ratio(2048, 512) == "21:9"


def test_core_txt2img_wire_shape_cost_and_size(settings_factory: Any, stability: StabilityServer) -> None:
    engine = make_engine(settings_factory, stability)
    out, steps = run(engine, request("core", [7, 8], negative_prompt="fog"))
    assert [g.seed for g in out] == [7, 8] and [g.cost for g in out] == [0.03, 0.03]
    assert all(g.image.size == (64, 48) for g in out)  # fitted from the server's 5:4 image
    assert out[0].image.getpixel((10, 10)) != out[1].image.getpixel((10, 10))
    assert steps == [(1, 2), (2, 2)]
    calls = stability.api_calls()
    assert len(calls) == 2
    call = calls[0]
    assert call["path"] == "/v2beta/stable-image/generate/core"
    assert call["headers"]["content-type"].startswith("multipart/form-data")
    assert call["headers"]["authorization"] == f"Bearer {stability.key}" and call["headers"]["accept"] == "image/*"
    assert call["form"] == {
        "prompt": "a red lighthouse",
        "negative_prompt": "fog",
        "seed": "7",
        "output_format": "png",
        "aspect_ratio": "5:4",
        "none": "",  # the empty part that keeps a file-less form multipart
    }
    assert stability.key not in str(call["query"]) and not call["query"]
    engine.close()


def test_sd3_json_reply_extra_fields_and_price(settings_factory: Any, stability: StabilityServer) -> None:
    engine = make_engine(settings_factory, stability)
    options: dict[str, object] = {"accept": "json", "input.style_preset": "anime"}
    out, _ = run(engine, request("sd3.5-large", [3], options=options, width=96, height=96))
    assert out[0].cost == 0.065 and out[0].image.size == (96, 96)
    call = stability.api_calls()[0]
    assert call["path"] == "/v2beta/stable-image/generate/sd3" and call["headers"]["accept"] == "application/json"
    assert call["form"]["model"] == "sd3.5-large" and call["form"]["style_preset"] == "anime"
    assert "negative_prompt" not in call["form"]  # empty: not sent
    priced = request("ultra", [1], options={"price_per_image": 0.05})
    assert run(engine, priced)[0][0].cost == 0.05
    engine.close()


def test_img2img_and_inpaint(settings_factory: Any, stability: StabilityServer) -> None:
    engine = make_engine(settings_factory, stability)
    init = Image.new("RGB", (64, 48), (0, 90, 200))
    mask = Image.new("L", (64, 48), 255)
    assert not engine.capabilities(request("core", [1]).model).img2img
    assert engine.capabilities(request("sd3.5-medium", [1]).model).img2img
    out, _ = run(engine, request("sd3.5-medium", [5], kind="img2img", init_image=init, strength=0.4))
    assert out[0].image.size == (64, 48) and out[0].cost == 0.035
    call = stability.api_calls()[-1]
    assert call["form"]["mode"] == "image-to-image" and call["form"]["strength"] == "0.4"
    assert "aspect_ratio" not in call["form"]
    assert Image.open(io.BytesIO(call["files"]["image"])).size == (64, 48)
    out, _ = run(engine, request("core", [6], kind="inpaint", init_image=init, mask_image=mask))
    call = stability.api_calls()[-1]
    assert call["path"] == "/v2beta/stable-image/edit/inpaint" and set(call["files"]) == {"image", "mask"}
    assert Image.open(io.BytesIO(call["files"]["mask"])).mode == "L" and out[0].cost == 0.03
    engine.close()


@pytest.mark.parametrize(
    ("mode", "code", "calls"),
    [
        ("refusal", "content_rejected", 1),
        ("filtered", "content_rejected", 1),
        ("malformed", "provider_invalid_reply", 1),
        ("error", "provider_unavailable", 3),
        ("bad_key", "provider_auth_failed", 1),
        ("slow", "provider_timeout", 1),
    ],
)
def test_failures_map_to_codes(
    settings_factory: Any, stability: StabilityServer, mode: str, code: str, calls: int
) -> None:
    overrides: dict[str, Any] = {}
    if mode == "slow":
        stability.slow_seconds = 1.0
        overrides = {"provider_timeout_seconds": 0.2, "provider_max_retries": 0}
    if mode == "error":
        overrides = {"provider_max_retries": 2}
    stability.reset("good" if mode == "bad_key" else mode)
    engine = make_engine(settings_factory, stability, key="sk-wrong" if mode == "bad_key" else None, **overrides)
    with pytest.raises(EngineError) as caught:
        run(engine, request("core", [1]))
    assert caught.value.code == code
    assert "sk-stability" not in str(caught.value) and "sk-wrong" not in str(caught.value)
    assert len(stability.api_calls()) == calls
    engine.close()


def test_rate_limited_then_good(settings_factory: Any, stability: StabilityServer) -> None:
    stability.reset("rate_limited")
    engine = make_engine(settings_factory, stability)
    out, _ = run(engine, request("core", [1]))
    assert len(out) == 1 and len(stability.api_calls()) == 3  # two 429s with Retry-After: 0, then the image
    engine.close()


def test_end_to_end_job_records_cost_and_failure(settings_factory: Any, stability: StabilityServer) -> None:
    with remote_services(
        settings_factory, provider_stability_api_key=stability.key, provider_stability_base_url=stability.url
    ) as svc:
        svc.catalog.add_remote("sd-core", provider="stability", remote_model="core")
        job_id = submit(svc, model="sd-core", n=2, size="64x64")
        drain(svc)
        view = svc.generation.get(LOCAL_USER_ID, job_id)
        assert view.status == "succeeded" and len(view.outputs) == 2
        row = job_row(svc, job_id)
        assert row["provider_cost"] == pytest.approx(0.06)
        assert Image.open(io.BytesIO(stored_png(svc, view))).size == (64, 64)

        stability.reset("refusal")
        failed = submit(svc, model="sd-core", size="64x64")
        drain(svc)
        row = job_row(svc, failed)
        assert row["status"] == "failed" and row["error_code"] == "content_rejected"
        assert row["provider_cost"] is None
