"""A local Replicate predictions API: POST /v1/models/{owner}/{name}/predictions, POST /v1/predictions (with
``version``), GET /v1/predictions/{id}, POST /v1/predictions/{id}/cancel; ``Authorization: Bearer``; errors in
Replicate's problem shape ``{title, detail, status}``.

A prediction moves on at each poll: ``starting`` → ``processing`` with tqdm-style ``logs`` (one step a poll) →
``succeeded`` after ``steps`` polls, with ``output`` a list of one URL (served at /files/, no auth) and
``metrics.predict_time``. ``Prefer: wait`` makes it answer already finished. Modes (besides fake_provider's):
``refusal``: the prediction fails with Replicate's NSFW error; ``oom``: it fails with CUDA out of memory;
``malformed``: the poll answers text; ``foreign_urls``: ``urls`` and outputs point at another host name
(``localhost``) so tests see the token stays on the API host. ``on_poll(prediction)`` is called at every poll.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.providers.fake_provider import FakeProvider, picture

NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse({"title": title, "detail": detail, "status": status}, status_code=status)


class ReplicateServer(FakeProvider):
    what = "replicate"

    def __init__(self, key: str = "r8_test") -> None:
        self.steps = 3
        self.predictions: dict[str, dict[str, Any]] = {}
        self.on_poll: Callable[[dict[str, Any]], None] | None = None
        self._ids = itertools.count(1)
        super().__init__(key)

    def api_routes(self) -> list[Route]:
        return [
            Route("/v1/models/{owner}/{name}/predictions", self._create, methods=["POST"]),
            Route("/v1/predictions", self._create, methods=["POST"]),
            Route("/v1/predictions/{id}", self._get, methods=["GET"]),
            Route("/v1/predictions/{id}/cancel", self._cancel, methods=["POST"]),
        ]

    def unauthorized(self) -> Response:
        return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")

    def _base(self) -> str:
        return self.url.replace("127.0.0.1", "localhost") if self.mode == "foreign_urls" else self.url

    async def _create(self, request: Request) -> Response:
        entry, early = await self.common(request)
        if early is not None:
            return early
        body = await request.json()
        entry["json"] = body
        inputs = body.get("input")
        if not isinstance(inputs, dict) or not inputs.get("prompt"):
            return _problem(422, "Input validation failed", "- input: prompt is required")
        for key in ("image", "mask"):
            if key in inputs and not str(inputs[key]).startswith("data:image/png;base64,"):
                return _problem(422, "Input validation failed", f"- input.{key}: Does not match format 'uri'")
        if "owner" in request.path_params:
            model = f"{request.path_params['owner']}/{request.path_params['name']}"
        elif not body.get("version"):
            return _problem(422, "Invalid version or not permitted", "version is required")
        else:
            model = "owner/model"
        pid = f"pred{next(self._ids):04d}"
        base = self._base()
        prediction: dict[str, Any] = {
            "id": pid,
            "model": model,
            "version": body.get("version", "hidden"),
            "input": inputs,
            "logs": "",
            "output": None,
            "error": None,
            "status": "starting",
            "created_at": "2026-12-06T10:00:00.000Z",
            "urls": {"get": f"{base}/v1/predictions/{pid}", "cancel": f"{base}/v1/predictions/{pid}/cancel"},
            "polls": 0,
        }
        self.predictions[pid] = prediction
        if request.headers.get("prefer", "").startswith("wait"):
            for _ in range(self.steps + 1):
                self._advance(prediction)
        return JSONResponse(self._public(prediction), status_code=201)

    def _advance(self, prediction: dict[str, Any]) -> None:
        if prediction["status"] in ("succeeded", "failed", "canceled"):
            return
        prediction["polls"] += 1
        done = prediction["polls"]
        if done <= self.steps:
            prediction["status"] = "processing"
            pct = done * 100 // (self.steps + 1)
            prediction["logs"] += f"Using seed: {prediction['input'].get('seed')}\n" if done == 1 else ""
            prediction["logs"] += f"{pct:3d}%|####      | {done}/{self.steps + 1} [00:01<00:02,  1.50it/s]\n"
            return
        if self.mode == "refusal":
            prediction.update(status="failed", error=NSFW_ERROR)
        elif self.mode == "oom":
            prediction.update(status="failed", error="CUDA out of memory. Tried to allocate 2.00 GiB")
        else:
            seed = int(prediction["input"].get("seed", 0))
            size = (int(prediction["input"].get("width", 64)), int(prediction["input"].get("height", 64)))
            url = self.link(f"{prediction['id']}.png", picture(seed, size), self._base())
            if prediction["input"].get("output_as_data_url"):
                url = "data:image/png;base64," + base64.b64encode(self.files[f"{prediction['id']}.png"]).decode()
            prediction.update(status="succeeded", output=[url], metrics={"predict_time": 2.5})
        prediction["completed_at"] = "2026-12-06T10:00:03.000Z"

    @staticmethod
    def _public(prediction: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in prediction.items() if k != "polls"}

    async def _get(self, request: Request) -> Response:
        _entry, early = await self.common(request)
        if early is not None:
            return early
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        if self.mode == "malformed":
            return PlainTextResponse("upstream connect error or disconnect/reset before headers")
        self._advance(prediction)
        if self.on_poll is not None:
            self.on_poll(prediction)
        return JSONResponse(self._public(prediction))

    async def _cancel(self, request: Request) -> Response:
        _entry, early = await self.common(request)
        if early is not None:
            return early
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        self.canceled.append(prediction["id"])
        if prediction["status"] not in ("succeeded", "failed"):
            prediction["status"] = "canceled"
        return JSONResponse(self._public(prediction))
