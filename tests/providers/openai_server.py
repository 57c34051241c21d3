"""A local OpenAI-compatible images server: ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits``
(multipart ``image``, optional ``mask`` transparent where to edit), Bearer key, replies ``{created, data: [...]}``.

Pictures depend on the prompt, and on ``seed`` when the body carries one (LocalAI's extra), else on the image's
index; edits keep the init image where the mask is opaque. Modes (besides recording.py's): ``url`` (``data[].url``
to ``GET /files/N.png`` here), ``malformed`` (a body that is not JSON), ``non_image`` (base64 of bytes that are no
picture), ``refusal`` (400 ``content_policy_violation``), ``moderation`` (400 ``moderation_blocked``),
``few`` (one image fewer than asked). A wrong key gets OpenAI's 401 ``invalid_api_key``.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.recording import RecordingServer, Seen, encoded, picture


class OpenAIImagesServer(RecordingServer):
    what = "OpenAI images server"

    def __init__(self, api_key: str = "sk-test") -> None:
        super().__init__()
        self.api_key = api_key
        self.files: list[bytes] = []

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/images/generations", self._generations, methods=["POST"]),
                Route("/v1/images/edits", self._edits, methods=["POST"]),
                Route("/files/{index:int}.png", self._file, methods=["GET"]),
            ]
        )

    async def _generations(self, request: Request) -> Response:
        seen, failed = await self._checked(request)
        if failed is not None:
            return failed
        body = seen.json
        width, height = (int(v) for v in str(body["size"]).split("x"))
        seed = body.get("seed")
        images = [
            picture(width, height, body["prompt"], seed if seed is not None else k) for k in range(int(body["n"]))
        ]
        return self._reply(images)

    async def _edits(self, request: Request) -> Response:
        seen, failed = await self._checked(request)
        if failed is not None:
            return failed
        init = Image.open(io.BytesIO(seen.files["image"])).convert("RGB")
        fields = seen.form
        width, height = (int(v) for v in fields["size"].split("x"))
        keep = np.zeros((init.height, init.width), dtype=bool)
        if "mask" in seen.files:  # OpenAI's convention: opaque = keep, transparent = edit
            keep = np.asarray(Image.open(io.BytesIO(seen.files["mask"])).convert("RGBA"))[..., 3] > 127
        images = []
        for k in range(int(fields["n"])):
            painted = np.asarray(picture(init.width, init.height, fields["prompt"], fields.get("seed", k)))
            out = np.where(keep[..., None], np.asarray(init), 255 - (np.asarray(init) // 2 + painted // 2))
            images.append(Image.fromarray(out.astype(np.uint8), "RGB").resize((width, height)))
        return self._reply(images)

    async def _file(self, request: Request) -> Response:
        await self.record(request)
        return Response(self.files[request.path_params["index"]], media_type="image/png")

    async def _checked(self, request: Request) -> tuple[Seen, Response | None]:
        seen, failed = await self.common(request)
        if failed is not None:
            return seen, failed
        if seen.headers.get("authorization") != f"Bearer {self.api_key}":
            error = {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
            return seen, JSONResponse({"error": {**error, "param": None}}, status_code=401)
        if self.mode in ("refusal", "moderation"):
            code = "content_policy_violation" if self.mode == "refusal" else "moderation_blocked"
            error = {
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error",
            }
            return seen, JSONResponse({"error": {**error, "param": None, "code": code}}, status_code=400)
        if self.mode == "malformed":
            return seen, Response('{"created": 1, "data": [', media_type="application/json")
        return seen, None

    def _reply(self, images: list[Image.Image]) -> Response:
        if self.mode == "few":
            images = images[:-1]
        data: list[dict[str, str]] = []
        for image in images:
            png = b"this is not a picture" if self.mode == "non_image" else encoded(image)
            if self.mode == "url":
                self.files.append(png)
                data.append({"url": f"{self.url}/files/{len(self.files) - 1}.png"})
            else:
                data.append({"b64_json": base64.b64encode(png).decode()})
        return JSONResponse({"created": 1_700_000_000, "data": data})
