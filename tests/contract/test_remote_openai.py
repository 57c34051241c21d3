"""The OpenAI-compatible images engine (engines/remote/openai_images.py) against a local server speaking the real
protocol (tests/providers/openai_server.py): wire shapes, keys, replies, error mapping, retries, the breaker,
cancel, the engine contract's per-seed checks, one job end to end, and `studiolo models add-remote`."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from studiolo.cli import app
from studiolo.engines.base import EngineError, GenerationCanceled, ModelRef
from studiolo.engines.remote.openai_images import OpenAIImagesEngine
from studiolo.settings import Settings
from tests.providers.checks import check_contract, end_to_end, fresh_breakers, ignore, make_request
from tests.providers.openai_server import OpenAIImagesServer

__all__ = ["fresh_breakers"]  # the autouse fixture, used by being imported


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIImagesServer]:
    s = OpenAIImagesServer(api_key="sk-test")
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _reset(server: OpenAIImagesServer) -> None:
    server.reset()


def _settings(settings_factory: Any, server: OpenAIImagesServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "provider_openai_api_key": "sk-test",
        "provider_openai_base_url": f"{server.url}/v1",
        "provider_max_retries": 1,
        "provider_timeout_seconds": 5.0,
        **overrides,
    }
    settings: Settings = settings_factory(**values)
    return settings


def _model(remote: str = "gpt-image-1", **options: object) -> ModelRef:
    return ModelRef(id="gpt", engine="openai", source="remote", remote_model=remote, options=options)


@pytest.fixture
def engine(settings_factory: Any, server: OpenAIImagesServer) -> Iterator[OpenAIImagesEngine]:
    made = OpenAIImagesEngine(_settings(settings_factory, server))
    yield made
    made.close()


def test_txt2img_sends_one_call_for_the_batch_with_openai_fields_and_the_key_in_the_header(
    engine: OpenAIImagesEngine, server: OpenAIImagesServer
) -> None:
    steps: list[tuple[int, int]] = []
    images = engine.generate(
        make_request(_model(quality="medium"), seeds=[5, 900, 3]), lambda s, t, **_: steps.append((s, t)), lambda: False
    )
    assert [g.seed for g in images] == [5, 900, 3]
    assert all(g.image.size == (64, 48) and g.image.mode == "RGB" and g.cost == 0.042 for g in images)
    assert steps == [(0, 1), (1, 1)]
    (seen,) = server.requests
    assert seen.path == "/v1/images/generations"
    assert seen.headers["authorization"] == "Bearer sk-test" and "sk-test" not in seen.raw_path + str(seen.query)
    # GPT image models refuse response_format; OpenAI has no seed or negative prompt: none is sent.
    assert seen.json == {
        "model": "gpt-image-1",
        "prompt": "a lighthouse at dusk",
        "n": 3,
        "size": "64x48",
        "quality": "medium",
    }


def test_extra_params_send_seed_negative_prompt_and_steps_one_call_per_seed(
    engine: OpenAIImagesEngine, server: OpenAIImagesServer
) -> None:
    model = _model("sd-local", extra_params=True)
    check_contract(engine, model, honours_seeds=True)
    server.reset()
    images = engine.generate(make_request(model, seeds=[7, 8]), ignore, lambda: False)
    assert [g.cost for g in images] == [0.0, 0.0]  # not in the price table: a server of your own
    bodies = [r.json for r in server.requests]
    assert [b["seed"] for b in bodies] == [7, 8]
    assert all(b["n"] == 1 and b["negative_prompt"] == "fog" and b["steps"] == 2 for b in bodies)
    assert all(b["response_format"] == "b64_json" for b in bodies)


def test_dall_e_3_makes_one_image_per_call_and_max_n_splits_batches(
    engine: OpenAIImagesEngine, server: OpenAIImagesServer
) -> None:
    images = engine.generate(make_request(_model("dall-e-3"), seeds=[1, 2]), ignore, lambda: False)
    assert [r.json["n"] for r in server.requests] == [1, 1] and [g.cost for g in images] == [0.04, 0.04]
    server.reset()
    engine.generate(make_request(_model("other", max_n=2, price_per_image=0.5), seeds=[1, 2, 3]), ignore, lambda: False)
    assert [r.json["n"] for r in server.requests] == [2, 1]


def test_a_base_url_override_never_gets_the_openai_key(
    engine: OpenAIImagesEngine, server: OpenAIImagesServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.api_key = "local-key"
    try:
        model = _model("sd", base_url=f"{server.url}/v1", api_key_env="LOCALAI_KEY")
        monkeypatch.setenv("LOCALAI_KEY", "local-key")
        engine.generate(make_request(model), ignore, lambda: False)
        monkeypatch.delenv("LOCALAI_KEY")
        with pytest.raises(EngineError) as excinfo:
            engine.generate(make_request(model), ignore, lambda: False)
        assert excinfo.value.code == "provider_auth_failed"
    finally:
        server.api_key = "sk-test"
    assert [r.headers.get("authorization") for r in server.requests] == ["Bearer local-key", None]


def test_url_replies_are_downloaded_without_the_key(engine: OpenAIImagesEngine, server: OpenAIImagesServer) -> None:
    server.reset("url")
    images = engine.generate(make_request(_model("dall-e-2"), seeds=[1, 2]), ignore, lambda: False)
    assert len(images) == 2 and images[0].image.size == (64, 48)
    downloads = [r for r in server.requests if r.path.startswith("/files/")]
    assert len(downloads) == 2 and all("authorization" not in r.headers for r in downloads)


def test_inpaint_sends_the_mask_transparent_where_to_edit_and_keeps_the_rest(
    engine: OpenAIImagesEngine, server: OpenAIImagesServer
) -> None:
    request = make_request(_model(), kind="inpaint", seeds=[4], init_image=make_request(_model()).init_image)
    (out,) = engine.generate(request, ignore, lambda: False)
    (seen,) = server.requests
    assert seen.path == "/v1/images/edits" and set(seen.files) == {"image", "mask"}
    assert seen.form["model"] == "gpt-image-1" and seen.form["size"] == "64x48" and seen.form["n"] == "1"
    alpha = np.asarray(Image.open(io.BytesIO(seen.files["mask"])).convert("RGBA"))[..., 3]
    assert alpha[:, :32].min() == 255 and alpha[:, 32:].max() == 0  # our white (repaint) = their transparent
    sent = np.asarray(Image.open(io.BytesIO(seen.files["image"])).convert("RGB"), dtype=np.int16)
    got = np.asarray(out.image, dtype=np.int16)
    assert np.abs(got[:, :30] - sent[:, :30]).mean() <= 1.0 and np.abs(got[:, 34:] - sent[:, 34:]).mean() >= 8.0


def test_img2img_sends_the_image_without_a_mask_and_edits_can_be_turned_off(
    engine: OpenAIImagesEngine, server: OpenAIImagesServer
) -> None:
    engine.generate(make_request(_model(), kind="img2img"), ignore, lambda: False)
    assert set(server.requests[0].files) == {"image"}
    no_edits = _model(edits=False)
    assert not engine.capabilities(no_edits).img2img and not engine.capabilities(no_edits).inpaint
    with pytest.raises(EngineError) as excinfo:
        engine.generate(make_request(no_edits, kind="img2img"), ignore, lambda: False)
    assert excinfo.value.code == "unsupported_task" and len(server.requests) == 1


@pytest.mark.parametrize(
    ("mode", "code", "calls"),
    [
        ("refusal", "content_rejected", 1),
        ("moderation", "content_rejected", 1),
        ("malformed", "provider_invalid_reply", 1),
        ("non_image", "provider_invalid_reply", 1),
        ("few", "provider_invalid_reply", 1),
        ("error", "provider_unavailable", 2),  # one retry (provider_max_retries=1), then given up
    ],
)
def test_failures_map_to_stable_codes(
    engine: OpenAIImagesEngine, server: OpenAIImagesServer, mode: str, code: str, calls: int
) -> None:
    server.reset(mode)
    with pytest.raises(EngineError) as excinfo:
        engine.generate(make_request(_model(), seeds=[1, 2]), ignore, lambda: False)
    assert excinfo.value.code == code and len(server.requests) == calls
    assert excinfo.value.retryable == (code == "provider_unavailable")


def test_a_wrong_key_is_provider_auth_failed(settings_factory: Any, server: OpenAIImagesServer) -> None:
    engine = OpenAIImagesEngine(_settings(settings_factory, server, provider_openai_api_key="sk-wrong"))
    with pytest.raises(EngineError) as excinfo:
        engine.generate(make_request(_model()), ignore, lambda: False)
    assert excinfo.value.code == "provider_auth_failed" and "sk-wrong" not in str(excinfo.value)


def test_429_with_retry_after_is_retried_then_succeeds(engine: OpenAIImagesEngine, server: OpenAIImagesServer) -> None:
    server.reset("rate_limited")
    assert len(engine.generate(make_request(_model()), ignore, lambda: False)) == 1
    assert len(server.requests) == 2


def test_a_slow_server_is_provider_timeout(settings_factory: Any, server: OpenAIImagesServer) -> None:
    server.reset("slow", slow_seconds=1.0)
    engine = OpenAIImagesEngine(
        _settings(settings_factory, server, provider_timeout_seconds=0.2, provider_max_retries=0)
    )
    with pytest.raises(EngineError) as excinfo:
        engine.generate(make_request(_model()), ignore, lambda: False)
    assert excinfo.value.code == "provider_timeout" and excinfo.value.retryable


def test_the_breaker_stops_calling_a_failing_provider(settings_factory: Any, server: OpenAIImagesServer) -> None:
    server.reset("error")
    settings = _settings(settings_factory, server, provider_max_retries=0, provider_breaker_failures=2)
    engine = OpenAIImagesEngine(settings)
    for _ in range(3):
        with pytest.raises(EngineError) as excinfo:
            engine.generate(make_request(_model()), ignore, lambda: False)
        assert excinfo.value.code == "provider_unavailable"
    assert len(server.requests) == 2  # the third call never reached the server
    assert "not calling it" in str(excinfo.value)


def test_a_cancel_between_retries_ends_the_job(engine: OpenAIImagesEngine, server: OpenAIImagesServer) -> None:
    server.reset("rate_limited", fail_times=5)
    with pytest.raises(GenerationCanceled):
        engine.generate(make_request(_model()), ignore, lambda: len(server.requests) >= 1)
    assert len(server.requests) == 1


def test_a_job_runs_end_to_end_and_records_the_cost(settings_factory: Any, server: OpenAIImagesServer) -> None:
    settings = _settings(settings_factory, server)
    job, pngs = end_to_end(settings, "openai", "gpt-image-1", {"price_per_image": 0.05}, n=2)
    assert job.status == "succeeded" and job.provider_cost == pytest.approx(0.10)
    assert len(pngs) == 2 and all(p.size == (64, 64) and "parameters" in p.info for p in pngs)
    assert server.requests[0].json["n"] == 2


def test_a_failing_provider_fails_the_job_after_the_queue_retries(
    settings_factory: Any, server: OpenAIImagesServer
) -> None:
    server.reset("error")
    settings = _settings(settings_factory, server, provider_max_retries=0, max_attempts=2, retry_backoff_seconds=0)
    job, pngs = end_to_end(settings, "openai", "gpt-image-1")
    assert (job.status, job.error_code, job.attempts) == ("failed", "provider_unavailable", 2)
    assert len(server.requests) == 2 and pngs == [] and job.provider_cost is None


def test_a_refused_prompt_fails_the_job_at_once(settings_factory: Any, server: OpenAIImagesServer) -> None:
    server.reset("refusal")
    settings = _settings(settings_factory, server, max_attempts=3, retry_backoff_seconds=0)
    job, _pngs = end_to_end(settings, "openai", "gpt-image-1")
    assert (job.status, job.error_code, job.attempts) == ("failed", "content_rejected", 1)


def test_cli_add_remote_registers_the_model_and_says_which_setting_is_missing(
    settings_factory: Any, server: OpenAIImagesServer
) -> None:
    settings = _settings(settings_factory, server)
    env = {
        "STUDIOLO_DATA_DIR": str(settings.data_dir),
        "STUDIOLO_DATABASE_URL": settings.database_url,
        "STUDIOLO_ENV": "test",
        "STUDIOLO_LOG_LEVEL": "warning",
    }
    runner = CliRunner()
    refused = runner.invoke(
        app, ["models", "add-remote", "gpt", "--provider", "openai", "--remote-model", "x"], env=env
    )
    assert refused.exit_code == 1 and "STUDIOLO_PROVIDER_OPENAI_API_KEY" in " ".join(refused.output.split())
    env |= {"STUDIOLO_PROVIDER_OPENAI_API_KEY": "sk-test", "STUDIOLO_PROVIDER_OPENAI_BASE_URL": f"{server.url}/v1"}
    args = ["models", "add-remote", "gpt", "--provider", "openai", "--remote-model", "gpt-image-1"]
    added = runner.invoke(
        app, [*args, "--option", "extra_params=true", "--option", "quality=low", "--price", "0.01"], env=env
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["models", "list"], env=env)
    assert "remote: gpt-image-1" in listed.output and "openai" in listed.output
    bad = runner.invoke(app, [*args, "--option", "novalue"], env=env)
    assert bad.exit_code == 1 and "key=value" in bad.output
