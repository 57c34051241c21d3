"""The optional chat provider for a storyboard's image prompts (domain/film/prompter.py): the request it sends to an
OpenAI-compatible server (tests/chat_server.py, over real HTTP), how it reads the answer, its limits, and that every
failure falls back to the rule-based prompts (storyboard_prompts returns None and logs a warning)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from studiolo.domain.film.prompter import (
    SYSTEM_PROMPT,
    ChatScenePrompter,
    PrompterError,
    build_scene_prompter,
    parse_prompts,
    storyboard_prompts,
)
from studiolo.domain.film.script import count_words
from tests.chat_server import ChatServer, provider_prompt, scenes_of
from tests.conftest import make_settings

SCENES = [
    "The lighthouse keeper woke before dawn. He climbed the spiral stairs.",
    "Outside, the storm had passed.\nThe sea was calm and grey.",
    "ADA: I brought you a small wooden box.",
]


@pytest.fixture(scope="module")
def server() -> Iterator[ChatServer]:
    with ChatServer(api_key="sk-chat") as s:
        yield s


@pytest.fixture
def chat(server: ChatServer) -> ChatServer:
    server.mode = "good"
    server.requests.clear()
    return server


def prompter(server: ChatServer, *, key: str = "sk-chat", timeout: float = 10.0) -> ChatScenePrompter:
    return ChatScenePrompter(server.url + "/", key, "test-model", timeout)


def test_a_good_answer_gives_one_prompt_per_scene_and_the_request_is_a_chat_completion(chat: ChatServer) -> None:
    prompts = prompter(chat).rewrite(SCENES, style="cinematic", title="The Keeper")
    assert prompts == [provider_prompt(s) for s in SCENES]
    assert len(chat.requests) == 1
    request = chat.requests[0]
    assert request["headers"]["authorization"] == "Bearer sk-chat"
    body = request["json"]
    assert body["model"] == "test-model"
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0.4
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert '{"prompts"' in SYSTEM_PROMPT and "60 words" in SYSTEM_PROMPT and "no speaker names" in SYSTEM_PROMPT
    user = body["messages"][1]["content"]
    assert "The Keeper" in user and "cinematic" in user
    # every scene on its own numbered line, its own line breaks folded
    assert scenes_of(body) == [" ".join(s.split()) for s in SCENES]


def test_a_fenced_answer_is_read(chat: ChatServer) -> None:
    chat.mode = "fenced"
    assert prompter(chat).rewrite(SCENES, style=None, title="t") == [provider_prompt(s) for s in SCENES]
    assert "none given" in chat.requests[0]["json"]["messages"][1]["content"]


def test_no_key_sends_no_authorization_header(chat: ChatServer) -> None:
    with pytest.raises(PrompterError, match="401"):
        prompter(chat, key="").rewrite(SCENES, style=None, title="t")
    assert "authorization" not in chat.requests[0]["headers"]


@pytest.mark.parametrize(("mode", "message"), [("wrong_count", "2 prompts for 3 scenes"), ("error", "500")])
def test_a_bad_answer_is_an_error_and_the_storyboard_keeps_its_own_prompts(
    chat: ChatServer, caplog: pytest.LogCaptureFixture, mode: str, message: str
) -> None:
    chat.mode = mode
    with pytest.raises(PrompterError, match=message):
        prompter(chat).rewrite(SCENES, style=None, title="t")
    with caplog.at_level(logging.WARNING, logger="studiolo.domain.film.prompter"):
        assert storyboard_prompts(prompter(chat), SCENES, style=None, title="t") is None
    assert any(message in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_slow_server_times_out_and_falls_back(chat: ChatServer, caplog: pytest.LogCaptureFixture) -> None:
    chat.mode = "slow"
    with pytest.raises(PrompterError, match="unreachable"):
        prompter(chat, timeout=0.3).rewrite(SCENES, style=None, title="t")
    with caplog.at_level(logging.WARNING, logger="studiolo.domain.film.prompter"):
        assert storyboard_prompts(prompter(chat, timeout=0.3), SCENES, style=None, title="t") is None
    assert any("Timeout" in r.getMessage() for r in caplog.records)


def test_an_unreachable_server_falls_back() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    gone = ChatScenePrompter(f"http://127.0.0.1:{port}", "k", "m", 2.0)
    with pytest.raises(PrompterError, match="unreachable"):
        gone.rewrite(SCENES, style=None, title="t")
    assert storyboard_prompts(gone, SCENES, style=None, title="t") is None


def test_a_good_provider_gives_the_storyboard_its_prompts(chat: ChatServer) -> None:
    assert storyboard_prompts(prompter(chat), SCENES, style="anime", title="t") == [provider_prompt(s) for s in SCENES]
    assert storyboard_prompts(prompter(chat), [], style=None, title="t") is None  # nothing to ask
    assert storyboard_prompts(None, SCENES, style=None, title="t") is None  # no provider configured
    assert len(chat.requests) == 1


class _Broken:
    def __init__(self, answer: list[str] | Exception) -> None:
        self.answer = answer

    def rewrite(self, scenes: Sequence[str], *, style: str | None, title: str) -> list[str]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    "answer", [RuntimeError("boom"), ["one", "two"], ["one", "  ", "three"], ["a", "b", "c", "d"]], ids=str
)
def test_any_failure_of_any_prompter_falls_back(answer: list[str] | Exception) -> None:
    assert storyboard_prompts(_Broken(answer), SCENES, style=None, title="t") is None


def test_another_prompter_s_prompts_are_cleaned_too() -> None:
    long = " ".join(f"w{i}" for i in range(80))
    out = storyboard_prompts(_Broken(['"a"', "b\n c", long]), SCENES, style=None, title="t")
    assert out is not None and out[:2] == ["a", "b c"] and count_words(out[2]) == 60


def test_parse_reads_fences_a_bare_list_and_json_after_prose() -> None:
    good = json.dumps({"prompts": ["a red boat", "a grey sea"]})
    assert parse_prompts(good, 2) == ["a red boat", "a grey sea"]
    assert parse_prompts(f"```\n{good}\n```", 2) == ["a red boat", "a grey sea"]
    assert parse_prompts(f"```JSON\n{good}```", 2) == ["a red boat", "a grey sea"]
    assert parse_prompts('["a red boat", "a grey sea"]', 2) == ["a red boat", "a grey sea"]
    assert parse_prompts(f"Here are your prompts:\n{good}\nEnjoy!", 2) == ["a red boat", "a grey sea"]


def test_parse_strips_quotes_folds_whitespace_and_trims_to_60_words() -> None:
    long = " ".join(f"word{i}" for i in range(100))
    quoted = '"Wide shot of a lighthouse at dawn, warm light"'
    prompts = parse_prompts(json.dumps({"prompts": [quoted, "“a gull”", "  two\n\tlines  ", long]}), 4)
    assert prompts[:3] == ["Wide shot of a lighthouse at dawn, warm light", "a gull", "two lines"]
    assert count_words(prompts[3]) == 60 and prompts[3].startswith("word0 word1") and prompts[3].endswith("word59")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json at all", "not JSON"),
        ("{broken", "not JSON"),
        ('{"images": ["a", "b"]}', 'no "prompts" list'),
        ('{"prompts": "a, b"}', 'no "prompts" list'),
        ('{"prompts": ["a", 2]}', 'no "prompts" list'),
        ('{"prompts": ["a"]}', "1 prompts for 2 scenes"),
        ('{"prompts": ["a", "b", "c"]}', "3 prompts for 2 scenes"),
        ('{"prompts": ["a", "\\"\\""]}', "empty prompt"),
    ],
)
def test_parse_refuses_what_is_not_one_prompt_per_scene(content: str, message: str) -> None:
    with pytest.raises(PrompterError, match=message):
        parse_prompts(content, 2)


def test_a_base_url_with_no_chat_route_is_an_error(chat: ChatServer) -> None:
    with pytest.raises(PrompterError, match="404"):
        ChatScenePrompter(chat.url + "/nowhere", "sk-chat", "m", 5.0).rewrite(SCENES, style=None, title="t")


def test_build_scene_prompter_from_settings(tmp_path: Path) -> None:
    assert build_scene_prompter(make_settings(tmp_path)) is None
    assert build_scene_prompter(make_settings(tmp_path, film_chat_api_base="   ")) is None
    built = build_scene_prompter(
        make_settings(
            tmp_path,
            film_chat_api_base="http://chat.example/",
            film_chat_api_key="sk-x",
            film_chat_model="llama3",
            film_chat_timeout_seconds=7,
        )
    )
    assert isinstance(built, ChatScenePrompter)
    assert (built.base_url, built.api_key, built.model, built.timeout) == ("http://chat.example", "sk-x", "llama3", 7)
