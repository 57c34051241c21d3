"""A local fal queue API: POST /{app id} queues a request and answers ``{request_id, response_url, status_url,
cancel_url}``; GET /{owner}/{app}/requests/{id}/status (``?logs=1``) moves it on at each poll: IN_QUEUE with a
``queue_position`` → IN_PROGRESS with ``logs`` → COMPLETED after ``steps`` polls; GET /{owner}/{app}/requests/{id}
gives the result ``{images: [{url, width, height, content_type}], seed, has_nsfw_concepts, prompt}``; PUT
.../cancel answers 202 CANCELLATION_REQUESTED. ``Authorization: Key``; the status and result URLs drop the app's
sub-path, as fal's do.

Modes (besides fake_provider's): ``refusal``: ``has_nsfw_concepts: [true]`` (the image blacked out);
``invalid``: the result is the app's 422 ``{detail: [{loc, msg, type}]}``; ``malformed``: a status of
``"SOMETHING"``; ``foreign_urls``: the URLs point at another host name (``localhost``). ``on_poll(request)``
is called at every status poll.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.fake_provider import FakeProvider, picture


class FalServer(FakeProvider):
    what = "fal"

    def __init__(self, key: str = "fal-key-id:secret") -> None:
        self.steps = 3
        self.queued: dict[str, dict[str, Any]] = {}
        self.on_poll: Callable[[dict[str, Any]], None] | None = None
        self._ids = itertools.count(1)
        super().__init__(key)

    def api_routes(self) -> list[Route]:
        return [Route("/{path:path}", self._route, methods=["GET", "POST", "PUT"])]

    def auth_ok(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Key {self.key}"

    def unauthorized(self) -> Response:
        return JSONResponse({"detail": "Invalid Key Authorization header format."}, status_code=401)

    async def _route(self, request: Request) -> Response:
        entry, early = await self.common(request)
        if early is not None:
            return early
        parts = request.path_params["path"].split("/")
        if len(parts) >= 4 and parts[2] == "requests":
            queued = self.queued.get(parts[3])
            if queued is None or queued["root"] != "/".join(parts[:2]):
                return JSONResponse({"detail": "Request not found"}, status_code=404)
            tail = parts[4:]
            if request.method == "GET" and tail == ["status"]:
                return self._status(queued)
            if request.method == "GET" and not tail:
                return self._result(queued)
            if request.method == "PUT" and tail == ["cancel"]:
                self.canceled.append(queued["id"])
                queued["canceled"] = True
                return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if request.method != "POST" or len(parts) < 2:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        body = await request.json()
        entry["json"] = body
        rid = f"{next(self._ids):08d}-fal0-4000-8000-request0000"
        root = "/".join(parts[:2])
        self.queued[rid] = {"id": rid, "root": root, "input": body, "polls": 0, "canceled": False}
        base = self.url.replace("127.0.0.1", "localhost") if self.mode == "foreign_urls" else self.url
        where = f"{base}/{root}/requests/{rid}"
        return JSONResponse(
            {
                "request_id": rid,
                "response_url": where,
                "status_url": f"{where}/status",
                "cancel_url": f"{where}/cancel",
                "queue_position": 0,
            }
        )

    def _status(self, queued: dict[str, Any]) -> Response:
        queued["polls"] += 1
        if self.on_poll is not None:
            self.on_poll(queued)
        where = f"{self.url}/{queued['root']}/requests/{queued['id']}"
        if self.mode == "malformed":
            return JSONResponse({"status": "SOMETHING", "response_url": where})
        polls = queued["polls"]
        if polls == 1:
            return JSONResponse({"status": "IN_QUEUE", "queue_position": 2, "response_url": where}, status_code=202)
        if polls <= self.steps:
            logs = [
                {"message": f"{step}/{self.steps} steps", "level": "INFO", "timestamp": "2026-12-06T10:00:01"}
                for step in range(1, polls)
            ]
            return JSONResponse({"status": "IN_PROGRESS", "logs": logs, "response_url": where}, status_code=202)
        return JSONResponse(
            {"status": "COMPLETED", "logs": [], "response_url": where, "metrics": {"inference_time": 1.2}}
        )

    def _result(self, queued: dict[str, Any]) -> Response:
        if queued["polls"] <= self.steps:
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        if self.mode == "invalid":
            detail = [{"loc": ["body", "num_inference_steps"], "msg": "ensure this value is less than or equal to 12",
                       "type": "value_error.number.not_le"}]  # fmt: skip
            return JSONResponse({"detail": detail}, status_code=422)
        body = queued["input"]
        size = body.get("image_size") or {"width": 64, "height": 64}
        width, height = int(size["width"]), int(size["height"])
        seed = int(body.get("seed", 0))
        base = self.url.replace("127.0.0.1", "localhost") if self.mode == "foreign_urls" else self.url
        url = self.link(f"{queued['id']}.png", picture(seed, (width, height)), base)
        image = {"url": url, "width": width, "height": height, "content_type": "image/png"}
        return JSONResponse(
            {
                "images": [image],
                "timings": {"inference": 1.2},
                "seed": seed,
                "has_nsfw_concepts": [self.mode == "refusal"],
                "prompt": body.get("prompt", ""),
            }
        )
