"""What the local provider servers of tests/providers/{openai,gemini,pollinations}_server.py share: a real uvicorn
server (tests/threaded_server.py), the requests it saw, and the failure modes every provider has.

Common modes: ``good``; ``rate_limited``: 429 with ``Retry-After: 0`` for the first ``fail_times`` requests, then
``good``; ``error``: 500 always; ``slow``: ``good`` after ``slow_seconds`` (past the client's timeout). Each server
adds its own (malformed JSON, bytes that are no image, a content refusal, ...).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.threaded_server import ThreadedServer


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def picture(width: int, height: int, *parts: object) -> Image.Image:
    """A picture that depends on ``parts`` (prompt, seed, ...): two colours from their hash, in a gradient."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    a, b = np.array(list(digest[:3]), dtype=np.float32), np.array(list(digest[3:6]), dtype=np.float32)
    t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 1), dtype=np.float32)
    return Image.fromarray((a * (1 - t) + b * t).round().astype(np.uint8), "RGB")


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


class RecordingServer:
    """Subclasses build ``self.app`` (a Starlette app) and call ``self.common(request)`` first in each endpoint."""

    what = "provider server"

    def __init__(self) -> None:
        self.mode = "good"
        self.fail_times = 1
        self.slow_seconds = 1.0
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server: ThreadedServer | None = None
        self.url = ""

    def app(self) -> Any:
        raise NotImplementedError

    def start(self) -> str:
        self._server = ThreadedServer(self.app(), self.what)
        self.url = self._server.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def reset(self, mode: str = "good", **attrs: Any) -> None:
        with self._lock:
            self.mode = mode
            self.fail_times = 1
            self.requests.clear()
        for name, value in attrs.items():
            setattr(self, name, value)

    async def record(self, request: Request) -> Seen:
        seen = Seen(
            method=request.method,
            path=request.url.path,
            raw_path=request.scope.get("raw_path", b"").decode(),
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        kind = request.headers.get("content-type", "")
        if kind.startswith("application/json"):
            seen.json = await request.json()
        elif kind.startswith("multipart/form-data"):
            async with request.form() as form:
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        seen.form[key] = value
                    else:
                        seen.files[key] = await value.read()
        with self._lock:
            self.requests.append(seen)
        return seen

    async def common(self, request: Request) -> tuple[Seen, Response | None]:
        """Record the request; the response of a common failure mode, or None to answer normally."""
        seen = await self.record(request)
        with self._lock:
            count = len(self.requests)
        if self.mode == "rate_limited" and count <= self.fail_times:
            body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
            return seen, JSONResponse(body, status_code=429, headers={"Retry-After": "0"})
        if self.mode == "error":
            return seen, JSONResponse(
                {"error": {"message": "The server had an error", "code": None}},
                status_code=500,
                headers={"Retry-After": "0"},  # keeps the tests' retries instant
            )
        if self.mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        return seen, None
