"""A local Pollinations server: ``GET /prompt/{prompt}?width=&height=&seed=&model=&nologo=&private=`` answers JPEG
bytes of the requested size, made from the prompt and the seed; an optional ``Authorization: Bearer`` token is
checked when the server has one.

Modes (besides recording.py's): ``json`` (a 200 JSON body, as Pollinations' error pages are), ``non_image`` (image/jpeg
bytes that are no picture), ``text`` (a 200 text/plain body).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.providers.recording import RecordingServer, encoded, picture


class PollinationsServer(RecordingServer):
    what = "Pollinations server"

    def __init__(self, token: str = "") -> None:
        super().__init__()
        self.token = token

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/prompt/{prompt:path}", self._image, methods=["GET"])])

    async def _image(self, request: Request) -> Response:
        seen, failed = await self.common(request)
        if failed is not None:
            return failed
        if self.token and seen.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"error": "Unauthorized", "message": "Invalid token"}, status_code=401)
        if self.mode == "json":
            return JSONResponse({"error": "Internal Server Error", "message": "model overloaded"})
        if self.mode == "text":
            return PlainTextResponse("queue full, try later")
        if self.mode == "non_image":
            return Response(b"\xff\xd8 not really a jpeg", media_type="image/jpeg")
        q = seen.query
        made = picture(int(q["width"]), int(q["height"]), request.path_params["prompt"], q.get("seed"), q.get("model"))
        return Response(encoded(made, "JPEG"), media_type="image/jpeg")
