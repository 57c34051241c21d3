"""A local OpenAI-compatible chat server for tests: ``POST /v1/chat/completions`` over real HTTP.

It checks the Bearer key and that the body is a chat request (model, messages with a system and a user message),
records every request, and answers a chat completion whose content follows ``mode``:

- ``good``: ``{"prompts": [...]}``, one per numbered scene of the user message ("1. text"), each
  ``"<PREFIX> <the scene's first words>"`` so a test can tell the provider's prompts from the rule-based ones;
- ``fenced``: the same JSON inside a Markdown ```json fence;
- ``wrong_count``: one prompt fewer than the scenes;
- ``error``: HTTP 500 with an OpenAI error body;
- ``slow``: the good answer after ``slow_seconds`` (longer than a test's client timeout).

    with ChatServer(api_key="sk-chat") as server:
        server.mode = "fenced"
        server.requests   # every request: {"headers": {...}, "json": {...}}
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.threaded_server import ThreadedServer

PREFIX = "Cinematic still:"
MODES = ("good", "fenced", "wrong_count", "error", "slow")
_SCENE = re.compile(r"^(\d+)\. (.*)$", re.MULTILINE)


def scenes_of(body: dict[str, Any]) -> list[str]:
    """The numbered scene texts of a recorded request's user message."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return [text for _, text in _SCENE.findall(user)]


def provider_prompt(scene: str) -> str:
    return f"{PREFIX} {' '.join(scene.split()[:8])}"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


class ChatServer:
    def __init__(self, api_key: str = "sk-chat") -> None:
        self.api_key = api_key
        self.mode = "good"
        self.slow_seconds = 2.0
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadedServer(
            Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])]), "chat server"
        )
        self.url = ""

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append({"headers": dict(request.headers), "json": body})
            mode = self.mode
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.")
        messages = body.get("messages")
        if not isinstance(body.get("model"), str) or not isinstance(messages, list):
            return _error(400, "model and messages are required.")
        if [m.get("role") for m in messages] != ["system", "user"]:
            return _error(400, "This server expects a system and a user message.")
        if mode == "error":
            return _error(500, "The server had an error while processing your request.")
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        prompts = [provider_prompt(scene) for scene in scenes_of(body)]
        if mode == "wrong_count":
            prompts = prompts[:-1]
        content = json.dumps({"prompts": prompts})
        if mode == "fenced":
            content = f"```json\n{content}\n```"
        return JSONResponse(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
            }
        )

    def __enter__(self) -> ChatServer:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()
