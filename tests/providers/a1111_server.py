"""A local AUTOMATIC1111 server for tests: ``/sdapi/v1`` txt2img, img2img, progress and interrupt over real HTTP.

It speaks A1111's shapes (request fields and defaults, ``{images, parameters, info}`` with ``info`` a JSON string,
``/progress``'s ``state``, ``--api-auth`` Basic auth with a 401 + ``WWW-Authenticate``), makes ``batch_size``
images with seeds ``seed + i`` (or, with a ``subseed_strength``, the same seed and subseeds ``subseed + i``), each a
real PNG drawn deterministically from its seed, subseed, size and the init image. It records every request.

Modes (``server.mode``): ``good``; ``rate_limited`` (429 with ``Retry-After: 0`` for ``fail_times`` calls, then
good); ``error`` (500 A1111 error JSON); ``malformed`` (images that are not base64); ``slow`` (``step_seconds`` per
step, so progress and interrupt can be watched).

    with A1111Server(auth="user:pw") as server:  # server.url, server.requests, server.interrupts
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import threading
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.threaded_server import ThreadedServer

CHECKPOINTS = ("sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors")


def seeded_png(seed: int, width: int, height: int, salt: str = "", init: Image.Image | None = None) -> Image.Image:
    """A picture that depends only on its arguments: two colour bands from a hash, over the init image if any."""
    digest = hashlib.sha256(f"{seed}:{width}x{height}:{salt}".encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[0:3]))
    band = Image.new("RGB", (width, max(1, height // 2)), tuple(digest[3:6]))
    image.paste(band, (0, 0))
    if init is not None:
        image = Image.blend(init.convert("RGB").resize((width, height)), image, 0.5)
    return image


def encode_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_input(value: str) -> Image.Image:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    image = Image.open(io.BytesIO(base64.b64decode(value, validate=True)))
    image.load()
    return image


class A1111Server:
    def __init__(self, auth: str = "", fail_times: int = 1, step_seconds: float = 0.05) -> None:
        self.auth = auth
        self.mode = "good"
        self.fail_times = fail_times
        self.step_seconds = step_seconds
        self.requests: list[dict[str, Any]] = []  # {"path", "body", "authorization"}
        self.interrupts = 0
        self.progress_polls = 0
        self._failures = 0
        self._interrupted = False
        self._state: dict[str, Any] = {"job_count": 0, "sampling_step": 0, "sampling_steps": 0}
        self._lock = threading.Lock()
        self._server = ThreadedServer(
            Starlette(
                routes=[
                    Route("/sdapi/v1/txt2img", self._txt2img, methods=["POST"]),
                    Route("/sdapi/v1/img2img", self._img2img, methods=["POST"]),
                    Route("/sdapi/v1/progress", self._progress, methods=["GET"]),
                    Route("/sdapi/v1/interrupt", self._interrupt, methods=["POST"]),
                ]
            ),
            "A1111 test server",
        )
        self.url = ""

    def __enter__(self) -> A1111Server:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def reset(self, mode: str = "good") -> None:
        with self._lock:
            self.mode = mode
            self.requests.clear()
            self.interrupts = 0
            self.progress_polls = 0
            self._failures = 0

    # -- routes --------------------------------------------------------------------------------------------------
    def _denied(self, request: Request) -> JSONResponse | None:
        if not self.auth:
            return None
        expected = "Basic " + base64.b64encode(self.auth.encode()).decode()
        if request.headers.get("authorization") == expected:
            return None
        return JSONResponse(
            {"detail": "Incorrect username or password"}, status_code=401, headers={"WWW-Authenticate": "Basic"}
        )

    async def _txt2img(self, request: Request) -> JSONResponse:
        return await self._generate(request, img2img=False)

    async def _img2img(self, request: Request) -> JSONResponse:
        return await self._generate(request, img2img=True)

    async def _generate(self, request: Request, *, img2img: bool) -> JSONResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        body = await request.json()
        self.requests.append(
            {"path": request.url.path, "body": body, "authorization": request.headers.get("authorization")}
        )
        if self.mode == "rate_limited" and self._failures < self.fail_times:
            self._failures += 1
            return JSONResponse({"detail": "Too many requests"}, status_code=429, headers={"Retry-After": "0"})
        if self.mode == "error":
            return JSONResponse(
                {"error": "RuntimeError", "detail": "", "body": "", "errors": "CUDA out of memory"}, status_code=500
            )
        init = None
        if img2img:
            if not body.get("init_images"):
                return JSONResponse({"error": "HTTPException", "detail": "Init image not found"}, status_code=404)
            init = decode_input(body["init_images"][0])
            if body.get("mask"):
                decode_input(body["mask"])
        checkpoint = (body.get("override_settings") or {}).get("sd_model_checkpoint", CHECKPOINTS[0])
        if checkpoint not in CHECKPOINTS:
            return JSONResponse({"error": "RuntimeError", "detail": f"model {checkpoint} not found"}, status_code=500)
        steps, count = int(body.get("steps", 50)), int(body.get("batch_size", 1))
        width, height = int(body.get("width", 512)), int(body.get("height", 512))
        seed, strength = int(body.get("seed", -1)), float(body.get("subseed_strength", 0))
        subseed = int(body.get("subseed", -1))
        seeds = [seed + (i if strength == 0 else 0) for i in range(count)]
        subseeds = [subseed + i for i in range(count)]
        self._interrupted = False
        self._state = {"job_count": 1, "sampling_step": 0, "sampling_steps": steps}
        for step in range(1, steps + 1):
            if self._interrupted:
                break
            if self.mode == "slow":
                await asyncio.sleep(self.step_seconds)
            self._state["sampling_step"] = step
        self._state = {"job_count": 0, "sampling_step": 0, "sampling_steps": 0}
        salt = f"{checkpoint}:{body.get('prompt', '')}"
        images = [
            seeded_png(s, width, height, salt + (f":{sub}:{strength}" if strength else ""), init)
            for s, sub in zip(seeds, subseeds, strict=True)
        ]
        encoded = ["not base64!" if self.mode == "malformed" else encode_png(img) for img in images]
        info = {
            "prompt": body.get("prompt", ""),
            "seed": seeds[0],
            "all_seeds": seeds,
            "subseed": subseeds[0],
            "all_subseeds": subseeds,
            "subseed_strength": strength,
            "width": width,
            "height": height,
            "sampler_name": body.get("sampler_name") or "Euler a",
            "steps": steps,
            "batch_size": count,
            "index_of_first_image": 0,
            "sd_model_name": checkpoint.rsplit(".", 1)[0],
        }
        parameters = {k: v for k, v in body.items() if k not in ("init_images", "mask")}
        return JSONResponse({"images": encoded, "parameters": parameters, "info": json.dumps(info)})

    async def _progress(self, request: Request) -> JSONResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        self.progress_polls += 1
        state = dict(self._state)
        running = state["job_count"] > 0
        step, total = state["sampling_step"], state["sampling_steps"]
        current = None
        if running and request.query_params.get("skip_current_image") == "false" and step > 0:
            current = encode_png(seeded_png(step, 16, 16))
        return JSONResponse(
            {
                "progress": (step / total) if running and total else 0,
                "eta_relative": 0,
                "state": {
                    "skipped": False,
                    "interrupted": self._interrupted,
                    "stopping_generation": False,
                    "job": "",
                    "job_count": state["job_count"],
                    "job_timestamp": "20261206000000",
                    "job_no": 0,
                    "sampling_step": step,
                    "sampling_steps": total,
                },
                "current_image": current,
                "textinfo": None,
            }
        )

    async def _interrupt(self, request: Request) -> JSONResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        self.interrupts += 1
        self._interrupted = True
        return JSONResponse({})
