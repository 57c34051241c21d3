"""A local Gemini server: ``POST /v1beta/models/{model}:generateContent`` with ``x-goog-api-key``; answers
``candidates[0].content.parts[].inlineData {mimeType, data}`` with a picture at the requested aspect ratio (longest
side 128, not the requested size, as Gemini answers at its own sizes), made from the prompt, the seed and, when the
request carries one, the init image. A wrong key gets Gemini's 400 INVALID_ARGUMENT / API_KEY_INVALID.

Modes (besides recording.py's): ``snake`` (``inline_data``/``mime_type``), ``blocked`` (``promptFeedback.blockReason``),
``image_safety`` (a candidate stopped for IMAGE_SAFETY, no image), ``text_only`` (a text part, finishReason STOP),
``malformed`` (a body that is not JSON), ``non_image`` (base64 of bytes that are no picture).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.recording import RecordingServer, encoded, picture

BAD_KEY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }
}


def _size(aspect_ratio: str) -> tuple[int, int]:
    w, _, h = aspect_ratio.partition(":")
    ratio = int(w) / int(h)
    return (128, round(128 / ratio)) if ratio >= 1 else (round(128 * ratio), 128)


class GeminiServer(RecordingServer):
    what = "Gemini server"

    def __init__(self, api_key: str = "gm-test") -> None:
        super().__init__()
        self.api_key = api_key

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1beta/models/{call}", self._generate, methods=["POST"])])

    async def _generate(self, request: Request) -> Response:
        seen, failed = await self.common(request)
        if failed is not None:
            return failed
        if not request.path_params["call"].endswith(":generateContent"):
            return JSONResponse({"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}}, 404)
        if seen.headers.get("x-goog-api-key") != self.api_key:
            return JSONResponse(BAD_KEY, status_code=400)
        if self.mode == "malformed":
            return Response("{candidates: oops", media_type="application/json")
        if self.mode == "blocked":
            return JSONResponse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
        if self.mode == "image_safety":
            return JSONResponse({"candidates": [{"content": {"parts": []}, "finishReason": "IMAGE_SAFETY"}]})
        if self.mode == "text_only":
            parts = [{"text": "Here is a picture of a lighthouse."}]
            return JSONResponse({"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]})
        body = seen.json
        config = body["generationConfig"]
        width, height = _size(config["imageConfig"]["aspectRatio"])
        parts = body["contents"][0]["parts"]
        prompt = next(p["text"] for p in parts if "text" in p)
        made = picture(width, height, prompt, config.get("seed"))
        init = next((p["inline_data"]["data"] for p in parts if "inline_data" in p), None)
        if init is not None:
            source = Image.open(io.BytesIO(base64.b64decode(init))).convert("RGB").resize((width, height))
            made = Image.blend(source, made, 0.5)
        data = base64.b64encode(b"not a picture" if self.mode == "non_image" else encoded(made)).decode()
        part: dict[str, Any] = (
            {"inline_data": {"mime_type": "image/png", "data": data}}
            if self.mode == "snake"
            else {"inlineData": {"mimeType": "image/png", "data": data}}
        )
        reply = {
            "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1290, "totalTokenCount": 1297},
        }
        return JSONResponse(reply)
