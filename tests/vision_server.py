"""A local vision server for tests that speaks two protocols over real HTTP:

- OpenAI-compatible ``POST /v1/chat/completions`` (Bearer key; a user message with an ``image_url`` data URI);
- Google Gemini ``POST /v1beta/models/{model}:generateContent`` (``x-goog-api-key``; ``inline_data`` image).

It checks the request's shape (a decodable PNG is attached), records every request, and answers by ``mode``:

- ``good``: the JSON description (``DESCRIPTION``); ``fenced``: it inside a Markdown fence after a line of prose;
- ``single_quotes``: a Python-style dict with single quotes and a trailing comma (repairable);
- ``malformed``: prose with no JSON at all; ``no_subject``: JSON without a subject;
- ``refusal``: a prose refusal; ``refusal_field``: OpenAI's ``message.refusal``, Gemini's ``finishReason: SAFETY``;
  ``blocked``: Gemini's ``promptFeedback.blockReason`` (OpenAI: a 400 ``content_policy_violation``);
- ``rate_limited``: 429 for the first ``fail_times`` requests, then ``good``; ``error``: always 500;
- ``slow``: ``good`` after ``slow_seconds``.

    with VisionServer() as server:  # server.url, server.requests, server.mode = "fenced"
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.threaded_server import ThreadedServer

DESCRIPTION: dict[str, Any] = {
    "subject": "a young woman with short red hair",
    "species": "red fox",
    "archetype": "the wanderer",
    "colors": [
        {"name": "rust", "hex": "#b7410e"},
        {"name": "cream", "hex": "#f3e5c4"},
        {"name": "forest", "hex": "zz"},
    ],
    "features": ["freckles", "green eyes"],
    "clothing": "denim jacket, silver earrings",
    "mood": "curious",
    "setting": "an autumn forest",
    "prompt": "",
    "style": "Watercolor",
}
MODES = (
    "good",
    "fenced",
    "single_quotes",
    "malformed",
    "no_subject",
    "refusal",
    "refusal_field",
    "blocked",
    "rate_limited",
    "error",
    "slow",
)
REFUSAL = "I'm sorry, but I can't help with identifying or describing this person."


def _png_ok(data: str) -> bool:
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True)), formats=["PNG"]) as image:
            image.load()
    except (ValueError, OSError):
        return False
    return True


class VisionServer:
    def __init__(self, api_key: str = "sk-vision") -> None:
        self.api_key = api_key
        self.mode = "good"
        self.fail_times = 2
        self.slow_seconds = 2.0
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._failed = 0
        routes = [
            Route("/v1/chat/completions", self._openai, methods=["POST"]),
            Route("/v1beta/models/{model}:generateContent", self._gemini, methods=["POST"]),
        ]
        self._server = ThreadedServer(Starlette(routes=routes), "vision server")
        self.url = ""

    def __enter__(self) -> VisionServer:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    async def _common(self, request: Request) -> tuple[str, Response | None]:
        """The mode for this request, or the answer of a failure mode (429/500/slow) that needs no protocol."""
        with self._lock:
            self.requests.append({"path": request.url.path, "headers": dict(request.headers)})
            mode = self.mode
            if mode == "rate_limited" and self._failed < self.fail_times:
                self._failed += 1
                return mode, JSONResponse(
                    {"error": {"message": "Rate limit reached", "code": 429}},
                    status_code=429,
                    headers={"Retry-After": "0"},
                )
        if mode == "error":
            return mode, JSONResponse({"error": {"message": "The server had an error", "code": 500}}, status_code=500)
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        return mode, None

    @staticmethod
    def content(mode: str) -> str:
        good = json.dumps(DESCRIPTION)
        if mode == "fenced":
            return f"Here is the description you asked for:\n```json\n{good}\n```\nHope it helps!"
        if mode == "single_quotes":
            return "{'subject': 'a young woman', 'features': ['freckles',], 'colors': ['rust', '#f3e5c4'],}"
        if mode == "malformed":
            return "The photo shows a person standing in a forest, wearing a jacket."
        if mode == "no_subject":
            return json.dumps({"mood": "calm", "colors": []})
        if mode == "refusal":
            return REFUSAL
        return good

    async def _openai(self, request: Request) -> Response:
        mode, early = await self._common(request)
        if early is not None:
            return early
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": {"message": "Incorrect API key provided."}}, status_code=401)
        body = await request.json()
        self.requests[-1]["json"] = body
        try:
            parts = body["messages"][1]["content"]
            url = next(p["image_url"]["url"] for p in parts if p.get("type") == "image_url")
        except (KeyError, IndexError, TypeError, StopIteration):
            return JSONResponse({"error": {"message": "a user message with an image_url is required"}}, status_code=400)
        if not url.startswith("data:image/png;base64,") or not _png_ok(url.split(",", 1)[1]):
            return JSONResponse({"error": {"message": "the image_url is not a PNG data URI"}}, status_code=400)
        if mode == "blocked":
            error = {"message": "Your request was rejected by our safety system.", "code": "content_policy_violation"}
            return JSONResponse({"error": error}, status_code=400)
        message: dict[str, Any] = {"role": "assistant", "content": self.content(mode)}
        if mode == "refusal_field":
            message = {"role": "assistant", "content": None, "refusal": REFUSAL}
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body.get("model", "") + "-2026-01-01",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 812, "completion_tokens": 96, "total_tokens": 908},
            }
        )

    async def _gemini(self, request: Request) -> Response:
        mode, early = await self._common(request)
        if early is not None:
            return early
        if request.headers.get("x-goog-api-key") != self.api_key:
            return JSONResponse(
                {"error": {"code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED"}}, 403
            )
        body = await request.json()
        self.requests[-1]["json"] = body
        try:
            parts = body["contents"][0]["parts"]
            data = next(p["inline_data"]["data"] for p in parts if "inline_data" in p)
        except (KeyError, IndexError, TypeError, StopIteration):
            return JSONResponse({"error": {"code": 400, "message": "contents with inline_data required"}}, 400)
        if not _png_ok(data):
            return JSONResponse({"error": {"code": 400, "message": "inline_data is not a PNG"}}, 400)
        if mode == "blocked":
            return JSONResponse({"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "gemini-test"})
        if mode == "refusal_field":  # Gemini's structured refusal: a candidate stopped for safety, without text
            return JSONResponse({"candidates": [{"finishReason": "SAFETY", "index": 0}], "modelVersion": "gemini-test"})
        text = self.content(mode)
        return JSONResponse(
            {
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 80, "totalTokenCount": 380},
                "modelVersion": request.path_params["model"],
            }
        )
