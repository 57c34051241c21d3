"""The fal engine against a local queue API (tests/providers/fal_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.engines.base import EngineError, GenerationCanceled, GenerationRequest, ModelRef
from studiolo.engines.remote.fal import FalEngine
from tests.helpers import drain, submit
from tests.providers.fake_provider import fresh_breakers, job_row, remote_services, stored_png
from tests.providers.fal_server import FalServer

FAST = {"poll_seconds": 0}


@pytest.fixture(scope="module")
def server() -> Iterator[FalServer]:
    with FalServer() as s:
        yield s


@pytest.fixture
def fal(server: FalServer) -> FalServer:
    server.reset()
    server.on_poll = None
    fresh_breakers()
    return server


def make_engine(settings_factory: Any, server: FalServer, key: str | None = None, **overrides: Any) -> Any:
    overrides.setdefault("provider_max_retries", 2)
    settings = settings_factory(provider_fal_api_key=key or server.key, provider_fal_base_url=server.url, **overrides)
    return FalEngine(settings)


def request(app: str, seeds: list[int], options: dict[str, object] | None = None, **kw: Any) -> GenerationRequest:
    model = ModelRef(id="f", engine="fal", source="remote", remote_model=app, options={**FAST, **(options or {})})
    return GenerationRequest(model=model, prompt="a red lighthouse", seeds=seeds, width=64, height=48, **kw)


def nothing(*_a: Any, **_k: Any) -> None:
    return None


def test_queue_wire_shape_progress_and_cost(settings_factory: Any, fal: FalServer) -> None:
    engine = make_engine(settings_factory, fal)
    steps: list[tuple[int, int, int]] = []
    options: dict[str, object] = {"price_per_megapixel": 0.003, "omit": "guidance_scale"}
    out = engine.generate(
        request("fal-ai/flux/schnell", [21, 22], options, steps=4),
        lambda step, total, image=0, **_: steps.append((step, total, image)),
        lambda: False,
    )
    assert [g.seed for g in out] == [21, 22] and all(g.image.size == (64, 48) for g in out)
    assert [g.cost for g in out] == [0.003, 0.003]  # a megapixel at most, rounded up
    assert (1, 3, 1) in steps and (2, 3, 2) in steps
    calls = fal.api_calls()
    submits = [r for r in calls if r["method"] == "POST"]
    assert [r["path"] for r in submits] == ["/fal-ai/flux/schnell"] * 2
    assert submits[0]["json"] == {
        "prompt": "a red lighthouse",
        "image_size": {"width": 64, "height": 48},
        "seed": 21,
        "num_images": 1,
        "num_inference_steps": 4,
        "enable_safety_checker": True,
    }
    polls = [r for r in calls if r["path"].endswith("/status")]
    assert polls and all(r["query"] == {"logs": "1"} for r in polls)
    assert all(r["path"].startswith("/fal-ai/flux/requests/") for r in calls if r["method"] == "GET")
    assert all(r["headers"]["authorization"] == f"Key {fal.key}" for r in calls)
    downloads = [r for r in fal.requests if r["path"].startswith("/files/")]
    assert len(downloads) == 2 and all("authorization" not in r["headers"] for r in downloads)
    engine.close()


def test_img2img_and_foreign_urls(settings_factory: Any, fal: FalServer) -> None:
    fal.reset("foreign_urls")
    engine = make_engine(settings_factory, fal)
    init = Image.new("RGB", (64, 48), (9, 9, 200))
    req = request("fal-ai/flux/dev/image-to-image", [3], {"kinds": "img2img", "safety_checker": "false"})
    req.kind, req.init_image, req.strength = "img2img", init, 0.6
    assert engine.capabilities(req.model).img2img and not engine.capabilities(req.model).txt2img
    out = engine.generate(req, nothing, lambda: False)
    assert out[0].cost is None  # no price configured: unknown, not zero
    sent = fal.api_calls()[0]["json"]
    assert sent["image_url"].startswith("data:image/png;base64,") and sent["strength"] == 0.6
    assert sent["enable_safety_checker"] is False
    authed = [r for r in fal.requests if "authorization" in r["headers"]]
    assert all(r["host"].startswith("127.0.0.1") for r in authed)  # fal's localhost URLs were not trusted
    assert [r["path"] for r in authed][1].startswith("/fal-ai/flux/requests/")
    engine.close()


@pytest.mark.parametrize(
    ("mode", "code", "said"),
    [
        ("refusal", "content_rejected", "safety checker"),
        ("invalid", "provider_rejected", "body.num_inference_steps: ensure this value is less than or equal to 12"),
        ("malformed", "provider_invalid_reply", "SOMETHING"),
        ("error", "provider_unavailable", "500"),
        ("bad_key", "provider_auth_failed", "Invalid Key"),
        ("slow", "provider_timeout", "in time"),
    ],
)
def test_failures_map_to_codes(settings_factory: Any, fal: FalServer, mode: str, code: str, said: str) -> None:
    overrides: dict[str, Any] = {"provider_max_retries": 1} if mode == "error" else {}
    if mode == "slow":
        fal.slow_seconds = 1.0
        overrides = {"provider_timeout_seconds": 0.2, "provider_max_retries": 0}
    fal.reset("good" if mode == "bad_key" else mode)
    engine = make_engine(settings_factory, fal, key="wrong:key" if mode == "bad_key" else None, **overrides)
    with pytest.raises(EngineError) as caught:
        engine.generate(request("fal-ai/fast-sdxl", [1]), nothing, lambda: False)
    assert caught.value.code == code and said in str(caught.value) and fal.key not in str(caught.value)
    engine.close()


def test_rate_limited_then_good_and_cancel(settings_factory: Any, fal: FalServer) -> None:
    fal.reset("rate_limited")
    engine = make_engine(settings_factory, fal)
    assert len(engine.generate(request("fal-ai/fast-sdxl", [1]), nothing, lambda: False)) == 1
    assert [r["method"] for r in fal.api_calls()][:3] == ["POST", "POST", "POST"]  # 429, 429, queued
    fal.reset()
    polls: list[int] = []
    fal.on_poll = lambda queued: polls.append(queued["polls"])
    with pytest.raises(GenerationCanceled):
        engine.generate(request("fal-ai/fast-sdxl", [1, 2]), nothing, lambda: len(polls) >= 2)
    assert len(fal.canceled) == 2
    assert all(r["method"] == "PUT" for r in fal.api_calls() if r["path"].endswith("/cancel"))
    engine.close()


def test_end_to_end_cost_failure_and_cancel(settings_factory: Any, fal: FalServer) -> None:
    with remote_services(settings_factory, provider_fal_api_key=fal.key, provider_fal_base_url=fal.url) as svc:
        options: dict[str, object] = {**FAST, "price_per_image": 0.003}
        svc.catalog.add_remote("schnell", provider="fal", remote_model="fal-ai/flux/schnell", options=options)
        job_id = submit(svc, model="schnell", size="64x64", n=2)
        drain(svc)
        view = svc.generation.get(LOCAL_USER_ID, job_id)
        assert view.status == "succeeded" and stored_png(svc, view, 1).startswith(b"\x89PNG")
        assert job_row(svc, job_id)["provider_cost"] == pytest.approx(0.006)

        fal.reset("invalid")
        failed = submit(svc, model="schnell", size="64x64")
        drain(svc)
        row = job_row(svc, failed)
        assert (row["status"], row["error_code"], row["provider_cost"]) == ("failed", "provider_rejected", None)

        fal.reset()
        canceled = submit(svc, model="schnell", size="64x64")
        fal.on_poll = lambda q: svc.generation.cancel(LOCAL_USER_ID, canceled) if q["polls"] == 2 else None
        drain(svc)
        assert job_row(svc, canceled)["status"] == "canceled"
        assert len(fal.canceled) == 1
