"""Both vision adapters against a local server speaking their protocol (tests/vision_server.py): good answers,
repairable and broken JSON, refusals, 429 then success, 5xx and timeouts after the retries."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from studiolo.domain.understanding.gemini import GeminiDescriber
from studiolo.domain.understanding.openai_vision import OpenAIVisionDescriber
from studiolo.domain.understanding.ports import Describer, Photo
from studiolo.domain.understanding.validate import normalize
from studiolo.errors import StudioloError
from tests.vision_server import VisionServer

ADAPTERS = ("openai", "gemini")


@pytest.fixture(scope="module")
def server() -> Iterator[VisionServer]:
    with VisionServer() as s:
        yield s


@pytest.fixture
def vision(server: VisionServer) -> VisionServer:
    server.mode, server._failed = "good", 0
    server.requests.clear()
    return server


def _photo() -> Photo:
    image = Image.new("RGB", (48, 32), (180, 70, 20))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return Photo(image, buffer.getvalue())


def _adapter(
    kind: str, server: VisionServer, *, key: str = "sk-vision", retries: int = 2, timeout: float = 5
) -> Describer:
    if kind == "openai":
        return OpenAIVisionDescriber(
            f"{server.url}/v1", key, "gpt-test", timeout=timeout, retries=retries, backoff=0.01
        )
    return GeminiDescriber(server.url, key, "gemini-test", timeout=timeout, retries=retries, backoff=0.01)


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize("mode", ["good", "fenced", "single_quotes"])
def test_answers_are_parsed_and_repaired(kind: str, mode: str, vision: VisionServer) -> None:
    vision.mode = mode
    reply = _adapter(kind, vision).describe(_photo(), "fursona", "")
    description = normalize(reply.data)
    assert description.subject.startswith("a young woman")
    assert reply.attempts == 1 and reply.prompt_tokens and reply.completion_tokens
    assert reply.model.startswith("gpt-test" if kind == "openai" else "gemini-test")
    request = vision.requests[-1]["json"]
    instruction = str(request)
    assert "fursona" in instruction and "JSON" in instruction  # the template's task and the schema were sent
    if kind == "openai":
        assert request["response_format"] == {"type": "json_object"}
    else:
        assert request["generationConfig"]["responseMimeType"] == "application/json"


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("malformed", 502, "describer_invalid_reply"),
        ("no_subject", 502, "describer_invalid_reply"),
        ("refusal", 422, "describe_refused"),
        ("refusal_field", 422, "describe_refused"),
        ("blocked", 422, "describe_refused"),
        ("error", 503, "describer_unavailable"),
    ],
)
def test_failures_have_stable_codes(kind: str, mode: str, status: int, code: str, vision: VisionServer) -> None:
    vision.mode = mode
    with pytest.raises(StudioloError) as caught:
        reply = _adapter(kind, vision).describe(_photo(), "portrait", "")
        normalize(reply.data)
    assert (caught.value.status_code, caught.value.code) == (status, code)
    # Only failures of the server are tried again: 1 + 2 retries for a 500, one request otherwise.
    assert len(vision.requests) == (3 if mode == "error" else 1)


@pytest.mark.parametrize("kind", ADAPTERS)
def test_rate_limits_are_retried_then_succeed(kind: str, vision: VisionServer) -> None:
    vision.mode, vision.fail_times = "rate_limited", 2
    reply = _adapter(kind, vision).describe(_photo(), "character", "")
    assert reply.attempts == 3 and normalize(reply.data).subject


@pytest.mark.parametrize("kind", ADAPTERS)
def test_rate_limited_past_the_retries_is_unavailable(kind: str, vision: VisionServer) -> None:
    vision.mode, vision.fail_times = "rate_limited", 5
    with pytest.raises(StudioloError) as caught:
        _adapter(kind, vision, retries=1).describe(_photo(), "character", "")
    assert caught.value.code == "describer_unavailable" and caught.value.details["attempts"] == 2
    assert "rate limited" in caught.value.details["reason"]


@pytest.mark.parametrize("kind", ADAPTERS)
def test_timeouts_are_retried_then_unavailable(kind: str, vision: VisionServer) -> None:
    vision.mode, vision.slow_seconds = "slow", 1.0
    with pytest.raises(StudioloError) as caught:
        _adapter(kind, vision, retries=1, timeout=0.2).describe(_photo(), "scene", "")
    assert caught.value.code == "describer_unavailable" and "no answer within" in caught.value.details["reason"]
    assert len(vision.requests) == 2


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_wrong_key_is_not_retried(kind: str, vision: VisionServer) -> None:
    with pytest.raises(StudioloError) as caught:
        _adapter(kind, vision, key="wrong").describe(_photo(), "scene", "")
    assert caught.value.code == "describer_unavailable" and caught.value.details["attempts"] == 1
    assert len(vision.requests) == 1
