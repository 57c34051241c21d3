"""The Pollinations engine (engines/remote/pollinations.py) against a local server speaking its GET protocol
(tests/providers/pollinations_server.py): the URL, the token only in a header, non-image replies, retries, the
engine contract's per-seed checks, being offered only when enabled, and one job end to end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from studiolo.engines.base import EngineError, ModelRef
from studiolo.engines.remote import remote_engines
from studiolo.engines.remote.pollinations import PollinationsEngine
from studiolo.settings import Settings
from tests.providers.checks import check_contract, end_to_end, fresh_breakers, ignore, make_request
from tests.providers.pollinations_server import PollinationsServer

__all__ = ["fresh_breakers"]  # the autouse fixture, used by being imported

MODEL = ModelRef(id="flux", engine="pollinations", source="remote", remote_model="flux")


@pytest.fixture(scope="module")
def server() -> Iterator[PollinationsServer]:
    s = PollinationsServer()
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _reset(server: PollinationsServer) -> None:
    server.reset(token="")


def _settings(settings_factory: Any, server: PollinationsServer, **overrides: Any) -> Settings:
    values = {
        "provider_pollinations_enabled": True,
        "provider_pollinations_base_url": server.url,
        "provider_max_retries": 1,
    }
    settings: Settings = settings_factory(**{**values, **overrides})
    return settings


@pytest.fixture
def engine(settings_factory: Any, server: PollinationsServer) -> Iterator[PollinationsEngine]:
    made = PollinationsEngine(_settings(settings_factory, server))
    yield made
    made.close()


def test_offered_only_when_enabled(settings_factory: Any) -> None:
    assert "pollinations" not in remote_engines(settings_factory())
    assert "pollinations" in remote_engines(settings_factory(provider_pollinations_enabled=True))


def test_one_get_per_seed_with_the_prompt_in_the_path(engine: PollinationsEngine, server: PollinationsServer) -> None:
    request = make_request(MODEL, prompt="a cat/dog? 50% & more", seeds=[8, 9])
    images = engine.generate(request, ignore, lambda: False)
    assert [g.seed for g in images] == [8, 9] and all(g.cost == 0.0 and g.image.size == (64, 48) for g in images)
    first = server.requests[0]
    assert first.raw_path == "/prompt/a%20cat%2Fdog%3F%2050%25%20%26%20more"
    assert first.query == {
        "width": "64",
        "height": "48",
        "seed": "8",
        "model": "flux",
        "nologo": "true",
        "private": "true",
    }  # no negative_prompt unless the model says the API takes it
    assert "authorization" not in first.headers


def test_the_engine_contract_per_seed(engine: PollinationsEngine) -> None:
    check_contract(engine, MODEL, honours_seeds=True)
    assert not engine.capabilities(MODEL).img2img


def test_the_token_goes_in_a_header_and_the_negative_prompt_when_asked(
    settings_factory: Any, server: PollinationsServer
) -> None:
    server.reset(token="pk-secret")
    engine = PollinationsEngine(_settings(settings_factory, server, provider_pollinations_token="pk-secret"))
    model = ModelRef(
        id="f", engine="pollinations", source="remote", remote_model="flux", options={"negative_prompt": True}
    )
    engine.generate(make_request(model), ignore, lambda: False)
    (seen,) = server.requests
    assert seen.headers["authorization"] == "Bearer pk-secret" and "pk-secret" not in seen.raw_path + str(seen.query)
    assert seen.query["negative_prompt"] == "fog"


@pytest.mark.parametrize(
    ("mode", "code", "calls"),
    [
        ("json", "provider_invalid_reply", 1),
        ("text", "provider_invalid_reply", 1),
        ("non_image", "provider_invalid_reply", 1),
        ("error", "provider_unavailable", 2),
    ],
)
def test_failures_map_to_stable_codes(
    engine: PollinationsEngine, server: PollinationsServer, mode: str, code: str, calls: int
) -> None:
    server.reset(mode)
    with pytest.raises(EngineError) as excinfo:
        engine.generate(make_request(MODEL), ignore, lambda: False)
    assert excinfo.value.code == code and len(server.requests) == calls


def test_429_is_retried(engine: PollinationsEngine, server: PollinationsServer) -> None:
    server.reset("rate_limited")
    engine.generate(make_request(MODEL), ignore, lambda: False)
    assert len(server.requests) == 2


def test_a_job_runs_end_to_end(settings_factory: Any, server: PollinationsServer) -> None:
    job, pngs = end_to_end(_settings(settings_factory, server), "pollinations", "flux", {"price_per_image": 0.001})
    assert job.status == "succeeded" and job.provider_cost == pytest.approx(0.001)
    assert len(pngs) == 1 and pngs[0].size == (64, 64) and "parameters" in pngs[0].info


def test_a_rate_limited_job_is_retried_by_the_queue(settings_factory: Any, server: PollinationsServer) -> None:
    server.reset("rate_limited", fail_times=1)
    settings = _settings(settings_factory, server, provider_max_retries=0, max_attempts=2, retry_backoff_seconds=0)
    job, pngs = end_to_end(settings, "pollinations", "flux")
    assert (job.status, job.attempts, len(pngs), len(server.requests)) == ("succeeded", 2, 1, 2)
