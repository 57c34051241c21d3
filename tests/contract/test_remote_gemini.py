"""The Gemini image engine (engines/remote/gemini.py) against a local server speaking generateContent
(tests/providers/gemini_server.py): wire shape, the key only in x-goog-api-key, replies of other sizes, refusals,
error mapping, retries, the engine contract's per-seed checks and one job end to end."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from studiolo.engines.base import EngineError, ModelRef
from studiolo.engines.remote.gemini import GeminiImageEngine, nearest_aspect_ratio
from studiolo.settings import Settings
from tests.providers.checks import check_contract, end_to_end, fresh_breakers, ignore, make_request
from tests.providers.gemini_server import GeminiServer

__all__ = ["fresh_breakers"]  # the autouse fixture, used by being imported

MODEL = ModelRef(id="banana", engine="gemini", source="remote", remote_model="gemini-2.5-flash-image")


@pytest.fixture(scope="module")
def server() -> Iterator[GeminiServer]:
    s = GeminiServer(api_key="gm-test")
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _reset(server: GeminiServer) -> None:
    server.reset()


def _settings(settings_factory: Any, server: GeminiServer, **overrides: Any) -> Settings:
    values = {"provider_gemini_api_key": "gm-test", "provider_gemini_base_url": server.url, "provider_max_retries": 1}
    settings: Settings = settings_factory(**{**values, **overrides})
    return settings


@pytest.fixture
def engine(settings_factory: Any, server: GeminiServer) -> Iterator[GeminiImageEngine]:
    made = GeminiImageEngine(_settings(settings_factory, server))
    yield made
    made.close()


def test_one_call_per_seed_with_the_seed_the_aspect_ratio_and_the_key_only_in_the_header(
    engine: GeminiImageEngine, server: GeminiServer
) -> None:
    steps: list[tuple[int, int]] = []
    images = engine.generate(make_request(MODEL, seeds=[3, 4]), lambda s, t, **_: steps.append((s, t)), lambda: False)
    assert [g.seed for g in images] == [3, 4] and all(g.cost == 0.039 for g in images)
    assert all(g.image.size == (64, 48) and g.image.mode == "RGB" for g in images)  # the 128x96 reply, fitted
    assert steps == [(0, 2), (1, 2), (2, 2)]
    first = server.requests[0]
    assert first.path == "/v1beta/models/gemini-2.5-flash-image:generateContent" and first.query == {}
    assert first.headers["x-goog-api-key"] == "gm-test" and "gm-test" not in first.raw_path
    assert first.json == {
        "contents": [{"parts": [{"text": "a lighthouse at dusk"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "4:3"}, "seed": 3},
    }


def test_the_engine_contract_per_seed(engine: GeminiImageEngine) -> None:
    check_contract(engine, MODEL, honours_seeds=True)


def test_img2img_sends_the_init_image_inline_and_inpaint_is_refused(
    engine: GeminiImageEngine, server: GeminiServer
) -> None:
    engine.generate(make_request(MODEL, kind="img2img"), ignore, lambda: False)
    inline = server.requests[0].json["contents"][0]["parts"][1]["inline_data"]
    assert inline["mime_type"] == "image/png" and base64.b64decode(inline["data"]).startswith(b"\x89PNG")
    assert not engine.capabilities(MODEL).inpaint
    with pytest.raises(EngineError) as excinfo:
        engine.generate(make_request(MODEL, kind="inpaint"), ignore, lambda: False)
    assert excinfo.value.code == "unsupported_task" and len(server.requests) == 1


def test_snake_case_replies_are_read(engine: GeminiImageEngine, server: GeminiServer) -> None:
    server.reset("snake")
    assert engine.generate(make_request(MODEL), ignore, lambda: False)[0].image.size == (64, 48)


@pytest.mark.parametrize(
    ("mode", "code", "calls"),
    [
        ("blocked", "content_rejected", 1),
        ("image_safety", "content_rejected", 1),
        ("text_only", "provider_invalid_reply", 1),
        ("malformed", "provider_invalid_reply", 1),
        ("non_image", "provider_invalid_reply", 1),
        ("error", "provider_unavailable", 2),
    ],
)
def test_failures_map_to_stable_codes(
    engine: GeminiImageEngine, server: GeminiServer, mode: str, code: str, calls: int
) -> None:
    server.reset(mode)
    with pytest.raises(EngineError) as excinfo:
        engine.generate(make_request(MODEL, seeds=[1, 2]), ignore, lambda: False)
    assert excinfo.value.code == code and len(server.requests) == calls


def test_a_bad_key_is_provider_auth_failed(settings_factory: Any, server: GeminiServer) -> None:
    engine = GeminiImageEngine(_settings(settings_factory, server, provider_gemini_api_key="wrong"))
    with pytest.raises(EngineError) as excinfo:
        engine.generate(make_request(MODEL), ignore, lambda: False)
    assert excinfo.value.code == "provider_auth_failed" and not excinfo.value.retryable


def test_429_is_retried(engine: GeminiImageEngine, server: GeminiServer) -> None:
    server.reset("rate_limited")
    engine.generate(make_request(MODEL), ignore, lambda: False)
    assert len(server.requests) == 2


def test_nearest_aspect_ratio() -> None:
    assert [nearest_aspect_ratio(w, h) for w, h in ((64, 64), (1920, 1080), (768, 1024), (2520, 1080))] == [
        "1:1",
        "16:9",
        "3:4",
        "21:9",
    ]


def test_a_job_runs_end_to_end(settings_factory: Any, server: GeminiServer) -> None:
    job, pngs = end_to_end(_settings(settings_factory, server), "gemini", "gemini-2.5-flash-image", n=2)
    assert job.status == "succeeded" and job.provider_cost == pytest.approx(0.078)
    assert len(pngs) == 2 and all(p.size == (64, 64) and "parameters" in p.info for p in pngs)
    assert [r.json["generationConfig"]["seed"] for r in server.requests] == list(job.seeds)


def test_a_blocked_prompt_fails_the_job(settings_factory: Any, server: GeminiServer) -> None:
    server.reset("blocked")
    job, pngs = end_to_end(_settings(settings_factory, server, retry_backoff_seconds=0), "gemini", "g")
    assert (job.status, job.error_code, job.attempts, pngs) == ("failed", "content_rejected", 1, [])
