"""A local OpenAI-compatible moderation server for tests: ``POST /v1/moderations`` over real HTTP.

It checks the Bearer key and the body (``model`` and a string or list ``input``), records every request, and
answers OpenAI's moderation object: one result per input, ``flagged`` when the input mentions one of
``FLAG_WORDS`` (whose category it sets, with the highest score; every other category false with a low score).
``mode`` changes the answer:

- ``good``: the moderation result described above;
- ``rate_limited``: 429 with OpenAI's rate-limit error body;
- ``error``: HTTP 500 with an OpenAI error body;
- ``invalid``: 200 with a body that is not a moderation result;
- ``slow``: the good answer after ``slow_seconds`` (longer than a test's client timeout).

    with ModerationServer(api_key="sk-mod") as server:
        settings_factory(moderation_api_base=f"{server.url}/v1", moderation_api_key="sk-mod")
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.threaded_server import ThreadedServer

MODES = ("good", "rate_limited", "error", "invalid", "slow")
# omni-moderation's categories, as its results name them.
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# A word in the input -> the category the server flags it under (a stand-in for the real model's judgement).
FLAG_WORDS = {"explicit": "sexual", "massacre": "violence", "dismember": "violence/graphic"}


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status_code=status)


def result_for(text: str) -> dict[str, Any]:
    """The moderation result of one input."""
    hits = {category for word, category in FLAG_WORDS.items() if word in text.lower()}
    return {
        "flagged": bool(hits),
        "categories": {c: c in hits for c in CATEGORIES},
        "category_scores": {c: (0.9 if c in hits else 0.001) for c in CATEGORIES},
        "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
    }


class ModerationServer:
    def __init__(self, api_key: str = "sk-mod") -> None:
        self.api_key = api_key
        self.mode = "good"
        self.slow_seconds = 2.0
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadedServer(
            Starlette(routes=[Route("/v1/moderations", self._moderate, methods=["POST"])]), "moderation server"
        )
        self.url = ""

    async def _moderate(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append({"headers": dict(request.headers), "json": body})
            mode = self.mode
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error")
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(body.get("model"), str) or not isinstance(texts, list) or not texts:
            return _error(400, "model and input are required.", "invalid_request_error")
        if mode == "rate_limited":
            return _error(429, "Rate limit reached for requests.", "requests")
        if mode == "error":
            return _error(500, "The server had an error while processing your request.", "server_error")
        if mode == "invalid":
            return JSONResponse({"id": "modr-test", "object": "list", "data": []})
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        return JSONResponse(
            {"id": "modr-test", "model": body["model"], "results": [result_for(str(text)) for text in texts]}
        )

    def __enter__(self) -> ModerationServer:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()
