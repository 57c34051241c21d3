"""A local Stability AI REST v2beta server: POST /v2beta/stable-image/generate/{core,ultra,sd3} and
/v2beta/stable-image/edit/inpaint, multipart/form-data, ``Authorization: Bearer``, replies by ``Accept``
(``image/*``: the PNG with ``finish-reason`` and ``seed`` headers; ``application/json``: ``{image, finish_reason,
seed}``). Errors are Stability's ``{id, name, errors: [...]}``.

Modes (besides fake_provider's): ``refusal``: 403 ``content_moderation``; ``filtered``: 200 with finish reason
``CONTENT_FILTERED``; ``malformed``: a 200 ``image/png`` whose bytes are not an image.
The images are small (``side`` pixels on the short edge at the ratio asked) to keep tests fast.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.fake_provider import FakeProvider, picture

RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash")


def _error(status: int, name: str, *errors: str) -> JSONResponse:
    return JSONResponse({"id": "a1b2c3", "name": name, "errors": list(errors)}, status_code=status)


class StabilityServer(FakeProvider):
    what = "stability"

    def __init__(self, key: str = "sk-stability") -> None:
        self.side = 48
        super().__init__(key)

    def api_routes(self) -> list[Route]:
        return [
            Route("/v2beta/stable-image/generate/{service}", self._generate, methods=["POST"]),
            Route("/v2beta/stable-image/edit/inpaint", self._inpaint, methods=["POST"]),
        ]

    def unauthorized(self) -> Response:
        return _error(401, "unauthorized", "authorization: invalid or missing header value")

    async def _form(self, request: Request, entry: dict[str, Any]) -> dict[str, Any] | Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(400, "bad_request", "content-type: must be multipart/form-data")
        form = await request.form()
        fields: dict[str, str] = {}
        files: dict[str, bytes] = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields[name] = value
            else:
                files[name] = await value.read()
        entry["form"], entry["files"] = fields, files
        if not fields.get("prompt"):
            return _error(400, "bad_request", "prompt: cannot be empty")
        if fields.get("output_format", "png") not in ("png", "jpeg", "webp"):
            return _error(400, "bad_request", "output_format: must be one of png, jpeg, webp")
        return {"fields": fields, "files": files}

    def _size(self, ratio: str) -> tuple[int, int]:
        w, h = (int(x) for x in ratio.split(":"))
        scale = self.side / min(w, h)
        return round(w * scale), round(h * scale)

    def _reply(self, request: Request, fields: dict[str, str], size: tuple[int, int]) -> Response:
        seed = int(fields.get("seed", "0") or 0)
        if self.mode == "refusal":
            return _error(
                403,
                "content_moderation",
                "Your request was flagged by our content moderation system, as a result your request was denied "
                "and you were not charged.",
            )
        if self.mode == "malformed":
            return Response(b"\x89PNG this is not an image", media_type="image/png")
        finish = "CONTENT_FILTERED" if self.mode == "filtered" else "SUCCESS"
        data = picture(seed, size)
        if request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"image": base64.b64encode(data).decode(), "finish_reason": finish, "seed": seed})
        if not request.headers.get("accept", "").startswith("image/"):
            return _error(400, "bad_request", "accept: must be image/* or application/json")
        return Response(data, media_type="image/png", headers={"finish-reason": finish, "seed": str(seed)})

    async def _generate(self, request: Request) -> Response:
        entry, early = await self.common(request)
        if early is not None:
            return early
        parsed = await self._form(request, entry)
        if isinstance(parsed, Response):
            return parsed
        fields, files = parsed["fields"], parsed["files"]
        service = request.path_params["service"]
        if service not in ("core", "ultra", "sd3"):
            return Response("Not Found", status_code=404)
        if service == "sd3" and fields.get("model", "sd3.5-large") not in SD3_MODELS:
            return _error(400, "bad_request", f"model: must be one of {', '.join(SD3_MODELS)}")
        image_to_image = fields.get("mode") == "image-to-image" or (service == "ultra" and "image" in files)
        if image_to_image:
            if "image" not in files or "strength" not in fields:
                return _error(400, "bad_request", "image, strength: required for image-to-image")
            return self._reply(request, fields, (64, 64))
        ratio = fields.get("aspect_ratio", "1:1")
        if ratio not in RATIOS:
            return _error(400, "bad_request", f"aspect_ratio: must be one of {', '.join(RATIOS)}")
        return self._reply(request, fields, self._size(ratio))

    async def _inpaint(self, request: Request) -> Response:
        entry, early = await self.common(request)
        if early is not None:
            return early
        parsed = await self._form(request, entry)
        if isinstance(parsed, Response):
            return parsed
        if "image" not in parsed["files"] or "mask" not in parsed["files"]:
            return _error(400, "bad_request", "image, mask: required")
        return self._reply(request, parsed["fields"], (64, 64))
