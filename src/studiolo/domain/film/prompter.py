"""Scene prompts from a chat model: an optional OpenAI-compatible provider rewrites a storyboard's scenes into
visual image prompts. Never required: with none configured, or when it fails in any way, the scenes keep their
rule-based prompts (script.scene_prompt: the scene's words).

``ChatScenePrompter`` posts ``{base}/v1/chat/completions`` (``response_format: json_object``) and expects
``{"prompts": [...]}`` with one prompt per scene. ``storyboard_prompts`` is what the film service calls: it never
raises. Tests: tests/unit/test_film_prompter.py (against tests/chat_server.py), tests/integration/test_film_prompter.py.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from studiolo.domain.film.script import PROMPT_MAX_WORDS, trim_words
from studiolo.settings import Settings

log = logging.getLogger(__name__)

TEMPERATURE = 0.4
SYSTEM_PROMPT = (
    "You turn the scenes of a short narrated film into image prompts for a text-to-image model. For each numbered "
    "scene write one short visual prompt: the concrete subjects, the setting, the lighting and the camera framing. "
    "No text, captions, letters or speech in the picture, no speaker names, no more than "
    f"{PROMPT_MAX_WORDS} words each. Answer with a JSON object only: "
    '{"prompts": ["prompt for scene 1", "prompt for scene 2", ...]}, exactly one prompt per scene, in order.'
)
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(?P<body>.*?)\n?\s*```\s*$", re.DOTALL)
_QUOTES = "\"'`“”‘’«»„"  # noqa: RUF001 -- typographic quotes are what is stripped


class PrompterError(Exception):
    """The provider could not be asked, or its answer is not one usable prompt per scene."""


class ScenePrompter(Protocol):
    def rewrite(self, scenes: Sequence[str], *, style: str | None, title: str) -> list[str]:
        """One image prompt per scene, in order; PrompterError (or any exception) when it cannot."""
        ...


def _clean(prompt: str) -> str:
    """One prompt: whitespace collapsed, surrounding quotes stripped, at most PROMPT_MAX_WORDS words."""
    text = " ".join(prompt.split()).strip(_QUOTES + " ")
    return trim_words(text, PROMPT_MAX_WORDS).strip(_QUOTES + " ,;")


def parse_prompts(content: str, count: int) -> list[str]:
    """The prompts in a chat answer's content: ``{"prompts": [...]}`` (or a bare list), perhaps inside ``` fences
    or after a line of prose; exactly ``count`` non-empty strings. PrompterError otherwise."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body").strip()
    data: Any
    try:
        data = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise PrompterError("the answer is not JSON") from None
        try:
            data = json.loads(text[start : end + 1])
        except ValueError:
            raise PrompterError("the answer is not JSON") from None
    prompts = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise PrompterError('the answer has no "prompts" list of strings')
    if len(prompts) != count:
        raise PrompterError(f"the answer has {len(prompts)} prompts for {count} scenes")
    cleaned = [_clean(p) for p in prompts]
    if not all(cleaned):
        raise PrompterError("the answer has an empty prompt")
    return cleaned


def user_message(scenes: Sequence[str], *, style: str | None, title: str) -> str:
    lines = [f"Film title: {title}", f"Visual style: {style or 'none given'}", f"Scenes ({len(scenes)}):"]
    lines += [f"{i}. {' '.join(text.split())}" for i, text in enumerate(scenes, start=1)]
    return "\n".join(lines)


class ChatScenePrompter:
    """An OpenAI-compatible chat completions server (OpenAI, a vLLM/llama.cpp/Ollama server, ...)."""

    def __init__(self, base_url: str, api_key: str = "", model: str = "gpt-4o-mini", timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.timeout = timeout

    def rewrite(self, scenes: Sequence[str], *, style: str | None, title: str) -> list[str]:
        if not scenes:
            return []
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_message(scenes, style=style, title=title)},
            ],
            "response_format": {"type": "json_object"},
            "temperature": TEMPERATURE,
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = httpx.post(
                f"{self.base_url}/v1/chat/completions", json=body, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise PrompterError(f"the chat server is unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise PrompterError(f"the chat server answered {response.status_code}: {response.text[:300]}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise PrompterError(f"not a chat completion: {response.text[:300]}") from None
        if not isinstance(content, str):
            raise PrompterError("the chat completion has no text content")
        return parse_prompts(content, len(scenes))


def build_scene_prompter(settings: Settings) -> ScenePrompter | None:
    """The configured provider (STUDIOLO_FILM_CHAT_API_BASE/_API_KEY/_MODEL/_TIMEOUT_SECONDS), or None."""
    if not settings.film_chat_api_base.strip():
        return None
    return ChatScenePrompter(
        settings.film_chat_api_base.strip(),
        settings.film_chat_api_key,
        settings.film_chat_model,
        settings.film_chat_timeout_seconds,
    )


def storyboard_prompts(
    prompter: ScenePrompter | None, scenes: Sequence[str], *, style: str | None, title: str
) -> list[str] | None:
    """The provider's prompts for ``scenes``, or None (keep the rule-based ones) when there is no provider or it
    failed in any way (logged as a warning): a storyboard never waits on, or fails because of, the provider."""
    if prompter is None or not scenes:
        return None
    try:
        prompts = [_clean(str(p)) for p in prompter.rewrite(scenes, style=style, title=title)]
        if len(prompts) != len(scenes) or not all(prompts):
            raise PrompterError(f"{len(prompts)} prompts (some empty?) for {len(scenes)} scenes")
    except Exception as exc:  # noqa: BLE001 -- "never required": any failure keeps the rule-based prompts
        log.warning(
            "The chat provider did not rewrite the storyboard's %d scenes (%s); keeping their own prompts.",
            len(scenes),
            exc,
        )
        return None
    return prompts
