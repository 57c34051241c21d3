"""The Replicate engine against a local predictions API (tests/providers/replicate_server.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.engines.base import EngineError, GenerationCanceled, GenerationRequest, ModelRef
from studiolo.engines.remote.polling import parse_progress
from studiolo.engines.remote.replicate import ReplicateEngine
from tests.helpers import drain, submit
from tests.providers.fake_provider import fresh_breakers, job_row, remote_services, stored_png
from tests.providers.replicate_server import ReplicateServer

FAST = {"poll_seconds": 0}


@pytest.fixture(scope="module")
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer() as s:
        yield s


@pytest.fixture
def replicate(server: ReplicateServer) -> ReplicateServer:
    server.reset()
    server.on_poll = None
    fresh_breakers()
    return server


def make_engine(settings_factory: Any, server: ReplicateServer, key: str | None = None, **overrides: Any) -> Any:
    overrides.setdefault("provider_max_retries", 2)
    settings = settings_factory(
        provider_replicate_api_token=key or server.key, provider_replicate_base_url=server.url, **overrides
    )
    return ReplicateEngine(settings)


def request(remote: str, seeds: list[int], options: dict[str, object] | None = None, **kw: Any) -> GenerationRequest:
    model = ModelRef(
        id="r", engine="replicate", source="remote", remote_model=remote, options={**FAST, **(options or {})}
    )
    return GenerationRequest(model=model, prompt="a red lighthouse", seeds=seeds, width=64, height=48, **kw)


def test_parse_progress() -> None:
    assert parse_progress(" 45%|####5     | 9/20 [00:02<00:02,  4.1it/s]") == (9, 20)
    assert parse_progress("step 3/8\nstep 4/8\n") == (4, 8)
    assert parse_progress("loading weights\n 62%") == (62, 100)
    assert parse_progress("Using seed: 42") is None


def test_txt2img_wire_shape_progress_and_cost(settings_factory: Any, replicate: ReplicateServer) -> None:
    engine = make_engine(settings_factory, replicate)
    steps: list[tuple[int, int, int]] = []
    options: dict[str, object] = {"price_per_second": 0.0014, "omit": "guidance_scale", "input.scheduler": "K_EULER"}
    out = engine.generate(
        request("black-forest-labs/flux-schnell", [11, 12], options, negative_prompt="fog"),
        lambda step, total, image=0, **_: steps.append((step, total, image)),
        lambda: False,
    )
    assert [g.seed for g in out] == [11, 12] and all(g.image.size == (64, 48) for g in out)
    assert [g.cost for g in out] == [0.0035, 0.0035]  # 2.5 s of predict_time x $0.0014/s
    assert (1, 4, 1) in steps and (3, 4, 2) in steps
    creates = [r for r in replicate.api_calls() if r["method"] == "POST"]
    assert [r["path"] for r in creates] == ["/v1/models/black-forest-labs/flux-schnell/predictions"] * 2
    assert creates[0]["json"] == {
        "input": {
            "prompt": "a red lighthouse",
            "negative_prompt": "fog",
            "width": 64,
            "height": 48,
            "seed": 11,
            "num_outputs": 1,
            "num_inference_steps": 20,
            "scheduler": "K_EULER",
        }
    }
    assert all(r["headers"]["authorization"] == f"Bearer {replicate.key}" for r in replicate.api_calls())
    downloads = [r for r in replicate.requests if r["path"].startswith("/files/")]
    assert len(downloads) == 2 and all("authorization" not in r["headers"] for r in downloads)
    engine.close()


def test_version_img2img_wait_and_foreign_urls(settings_factory: Any, replicate: ReplicateServer) -> None:
    replicate.reset("foreign_urls")
    engine = make_engine(settings_factory, replicate)
    init, mask = Image.new("RGB", (64, 48), (9, 9, 200)), Image.new("L", (64, 48), 255)
    options: dict[str, object] = {"kinds": "txt2img,inpaint", "wait": 30, "price_per_image": 0.01}
    req = request("stability-ai/sdxl:7762fd07cf82", [5], options, kind="inpaint", init_image=init, mask_image=mask)
    assert engine.capabilities(req.model).inpaint and not engine.capabilities(req.model).img2img
    out = engine.generate(req, lambda *a, **k: None, lambda: False)
    assert out[0].cost == 0.01
    create = replicate.api_calls()[0]
    assert create["path"] == "/v1/predictions" and create["json"]["version"] == "7762fd07cf82"
    assert create["headers"]["prefer"] == "wait=30"
    sent = create["json"]["input"]
    assert sent["image"].startswith("data:image/png;base64,") and sent["mask"].startswith("data:image/png;base64,")
    assert sent["prompt_strength"] == 0.75
    # The prediction's urls and output name another host: the token went only to the API host.
    authed = [r for r in replicate.requests if "authorization" in r["headers"]]
    assert authed and all(r["host"].startswith("127.0.0.1") for r in authed)
    assert all(r["host"].startswith("localhost") for r in replicate.requests if r["path"].startswith("/files/"))
    engine.close()


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("refusal", "content_rejected"),
        ("oom", "provider_unavailable"),
        ("malformed", "provider_invalid_reply"),
        ("error", "provider_unavailable"),
        ("bad_key", "provider_auth_failed"),
        ("slow", "provider_timeout"),
    ],
)
def test_failures_map_to_codes(settings_factory: Any, replicate: ReplicateServer, mode: str, code: str) -> None:
    overrides: dict[str, Any] = {"provider_max_retries": 1} if mode == "error" else {}
    if mode == "slow":
        replicate.slow_seconds = 1.0
        overrides = {"provider_timeout_seconds": 0.2, "provider_max_retries": 0}
    replicate.reset("good" if mode == "bad_key" else mode)
    engine = make_engine(settings_factory, replicate, key="r8_wrong" if mode == "bad_key" else None, **overrides)
    with pytest.raises(EngineError) as caught:
        engine.generate(request("owner/model", [1]), lambda *a, **k: None, lambda: False)
    assert caught.value.code == code and replicate.key not in str(caught.value)
    engine.close()


def test_invalid_input_is_provider_rejected_with_replicate_detail(
    settings_factory: Any, replicate: ReplicateServer
) -> None:
    engine = make_engine(settings_factory, replicate)
    with pytest.raises(EngineError) as caught:
        engine.generate(request("owner/model", [1], {"omit": "prompt"}), lambda *a, **k: None, lambda: False)
    assert caught.value.code == "provider_rejected" and "prompt is required" in str(caught.value)
    engine.close()


def test_rate_limited_then_good_and_cancel(settings_factory: Any, replicate: ReplicateServer) -> None:
    replicate.reset("rate_limited")
    engine = make_engine(settings_factory, replicate)
    assert len(engine.generate(request("owner/model", [1]), lambda *a, **k: None, lambda: False)) == 1
    assert [r["method"] for r in replicate.api_calls()][:3] == ["POST", "POST", "POST"]  # 429, 429, created
    replicate.reset()
    polls: list[int] = []
    replicate.on_poll = lambda prediction: polls.append(prediction["polls"])
    with pytest.raises(GenerationCanceled):
        engine.generate(request("owner/model", [1, 2]), lambda *a, **k: None, lambda: len(polls) >= 2)
    assert sorted(replicate.canceled) == sorted(replicate.predictions)[-2:]  # both unfinished predictions
    engine.close()


def test_end_to_end_cost_failure_and_cancel(settings_factory: Any, replicate: ReplicateServer) -> None:
    with remote_services(
        settings_factory, provider_replicate_api_token=replicate.key, provider_replicate_base_url=replicate.url
    ) as svc:
        options: dict[str, object] = {**FAST, "price_per_second": 0.001}
        svc.catalog.add_remote("flux", provider="replicate", remote_model="owner/flux", options=options)
        job_id = submit(svc, model="flux", size="64x64")
        drain(svc)
        view = svc.generation.get(LOCAL_USER_ID, job_id)
        assert view.status == "succeeded" and stored_png(svc, view).startswith(b"\x89PNG")
        assert job_row(svc, job_id)["provider_cost"] == pytest.approx(0.0025)

        replicate.reset("refusal")
        failed = submit(svc, model="flux", size="64x64")
        drain(svc)
        assert job_row(svc, failed) | {"provider_cost": None} == {
            "status": "failed",
            "error_code": "content_rejected",
            "provider_cost": None,
        }

        replicate.reset()
        canceled = submit(svc, model="flux", size="64x64")
        replicate.on_poll = lambda p: svc.generation.cancel(LOCAL_USER_ID, canceled) if p["polls"] == 2 else None
        drain(svc)
        assert job_row(svc, canceled)["status"] == "canceled"
        assert len(replicate.canceled) == 1
        assert json.dumps(replicate.requests).count(replicate.key) == len(replicate.api_calls())
