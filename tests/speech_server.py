"""A local OpenAI-compatible speech server for tests: ``POST /v1/audio/speech`` over real HTTP.

It checks what OpenAI checks (Bearer key, model, voice, input length, response_format, speed 0.25..4.0) and answers
with a real 24 kHz 16-bit mono WAV, streamed the way OpenAI sends it (RIFF and data sizes 0xFFFFFFFF). The audio is
a tone, not speech: its length follows the text (``SECONDS_PER_CHAR`` per character) divided by the speed, so
callers can check timing.

    with SpeechServer(api_key="sk-test") as server:
        engine = OpenAISpeech(server.url, "sk-test")
        server.fail_next = (500, {"error": {"message": "overloaded"}})   # the next request fails like that
        server.requests   # every request: {"headers": {...}, "json": {...}}
"""

from __future__ import annotations

import math
import struct
import threading
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.threaded_server import ThreadedServer

VOICES = ("alloy", "echo", "fable", "onyx", "nova", "shimmer")
RATE = 24000
SECONDS_PER_CHAR = 0.05


def streamed_wav(samples: np.ndarray, rate: int) -> bytes:
    """16-bit mono WAV with the placeholder sizes of a streamed response."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF" + b"\xff\xff\xff\xff" + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data\xff\xff\xff\xff" + pcm
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


class SpeechServer:
    def __init__(self, api_key: str = "sk-test") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.fail_next: tuple[int, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._server = ThreadedServer(
            Starlette(routes=[Route("/v1/audio/speech", self._speech, methods=["POST"])]), "speech server"
        )
        self.url = ""

    async def _speech(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append({"headers": dict(request.headers), "json": body})
            failure, self.fail_next = self.fail_next, None
        if failure is not None:
            return JSONResponse(failure[1], status_code=failure[0])
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.")
        if body.get("model") not in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts"):
            return _error(400, f"Invalid model {body.get('model')!r}.")
        if body.get("voice") not in VOICES:
            return _error(400, f"Invalid voice {body.get('voice')!r}.")
        text = body.get("input")
        if not isinstance(text, str) or not text or len(text) > 4096:
            return _error(400, "input must be 1 to 4096 characters.")
        if body.get("response_format") != "wav":
            return _error(400, "This server only answers response_format wav.")
        speed = float(body.get("speed", 1.0))
        if not 0.25 <= speed <= 4.0:
            return _error(400, "speed must be 0.25 to 4.0.")
        n = int(len(text) * SECONDS_PER_CHAR / speed * RATE)
        t = np.arange(n) / RATE
        tone = 0.4 * np.sin(2 * math.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * math.pi * 3 * t))
        return Response(streamed_wav(tone, RATE), media_type="audio/wav")

    def __enter__(self) -> SpeechServer:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()
