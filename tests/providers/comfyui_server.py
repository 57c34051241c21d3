"""A local ComfyUI server for tests: ``/prompt``, ``/history``, ``/view``, ``/queue``, ``/interrupt``,
``/upload/image`` and the ``/ws?clientId=`` WebSocket, over real HTTP.

It validates a received graph the way ComfyUI does (known ``class_type``s, required inputs, links to existing
nodes' outputs, values in lists: a bad one is a 400 ``{error, node_errors}``), runs it in order on the event loop
(one prompt at a time) sending ComfyUI's messages to the submitting client (``status``, ``execution_start``,
``execution_cached``, ``executing``, ``progress`` with binary preview frames, ``executed``, ``execution_success`` /
``execution_error`` / ``execution_interrupted``), and saves for each SaveImage a real PNG drawn deterministically
from the KSampler's seed, the latent's size and (img2img) the loaded image. It records every request.

Modes (``server.mode``): ``good``; ``execution_error`` (KSampler raises); ``ws_down`` (the WebSocket handshake is
refused: clients must poll /history); ``slow`` (``step_seconds`` per step, for cancel tests).
"""

from __future__ import annotations

import asyncio
import io
import struct
import uuid
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.providers.a1111_server import seeded_png
from tests.threaded_server import ThreadedServer

CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"]
SAMPLER_NAMES = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "ddim", "lms", "uni_pc"]
SCHEDULER_NAMES = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]
# class_type -> (required inputs: name -> "INT" | "FLOAT" | "STRING" | a list of allowed values | an input type),
# output types. Link inputs name the type they take.
NODES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "CheckpointLoaderSimple": ({"ckpt_name": CHECKPOINTS}, ("MODEL", "CLIP", "VAE")),
    "CLIPTextEncode": ({"text": "STRING", "clip": "CLIP"}, ("CONDITIONING",)),
    "EmptyLatentImage": ({"width": "INT", "height": "INT", "batch_size": "INT"}, ("LATENT",)),
    "LoadImage": ({"image": "UPLOAD"}, ("IMAGE", "MASK")),
    "LoadImageMask": ({"image": "UPLOAD", "channel": ["alpha", "red", "green", "blue"]}, ("MASK",)),
    "VAEEncode": ({"pixels": "IMAGE", "vae": "VAE"}, ("LATENT",)),
    "SetLatentNoiseMask": ({"samples": "LATENT", "mask": "MASK"}, ("LATENT",)),
    "KSampler": (
        {
            "seed": "INT",
            "steps": "INT",
            "cfg": "FLOAT",
            "sampler_name": SAMPLER_NAMES,
            "scheduler": SCHEDULER_NAMES,
            "denoise": "FLOAT",
            "model": "MODEL",
            "positive": "CONDITIONING",
            "negative": "CONDITIONING",
            "latent_image": "LATENT",
        },
        ("LATENT",),
    ),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, ("IMAGE",)),
    "SaveImage": ({"filename_prefix": "STRING", "images": "IMAGE"}, ()),
}
SCALARS = {"INT": int, "FLOAT": (int, float), "STRING": str, "UPLOAD": str}


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class ComfyUIServer:
    def __init__(self, step_seconds: float = 0.05) -> None:
        self.mode = "good"
        self.step_seconds = step_seconds
        self.prompts: list[dict[str, Any]] = []  # the POST /prompt bodies
        self.requests: list[str] = []  # "METHOD /path" of every HTTP request
        self.uploads: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.interrupts: list[Any] = []
        self.deleted: list[str] = []
        self.sockets: dict[str, WebSocket] = {}
        self.ws_connections = 0
        self._pending: list[str] = []
        self._running: str | None = None
        self._interrupt = False
        self._lock: asyncio.Lock | None = None
        self._number = 0
        self._tasks: set[asyncio.Task[None]] = set()  # held so the loop does not drop a running prompt
        self._server = ThreadedServer(
            Starlette(
                routes=[
                    Route("/prompt", self._prompt, methods=["POST"]),
                    Route("/history/{prompt_id}", self._history, methods=["GET"]),
                    Route("/view", self._view, methods=["GET"]),
                    Route("/queue", self._queue_get, methods=["GET"]),
                    Route("/queue", self._queue_post, methods=["POST"]),
                    Route("/interrupt", self._interrupt_post, methods=["POST"]),
                    Route("/upload/image", self._upload, methods=["POST"]),
                    WebSocketRoute("/ws", self._ws),
                ]
            ),
            "ComfyUI test server",
        )
        self.url = ""

    def __enter__(self) -> ComfyUIServer:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def reset(self, mode: str = "good") -> None:
        self.mode = mode
        self.prompts.clear()
        self.requests.clear()
        self.interrupts.clear()
        self.deleted.clear()
        self.ws_connections = 0

    # -- WebSocket -----------------------------------------------------------------------------------------------
    async def _ws(self, websocket: WebSocket) -> None:
        if self.mode == "ws_down":
            await websocket.close(code=1008)  # before accept: the handshake gets a 403
            return
        client_id = websocket.query_params.get("clientId") or uuid.uuid4().hex
        await websocket.accept()
        self.ws_connections += 1
        self.sockets[client_id] = websocket
        await websocket.send_json(
            {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}
        )
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            self.sockets.pop(client_id, None)

    async def _send(self, client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        socket = self.sockets.get(client_id or "")
        if socket is not None:
            try:
                await socket.send_json({"type": kind, "data": data})
            except (RuntimeError, WebSocketDisconnect):
                self.sockets.pop(client_id or "", None)

    # -- HTTP ----------------------------------------------------------------------------------------------------
    async def _prompt(self, request: Request) -> JSONResponse:
        self.requests.append("POST /prompt")
        body = await request.json()
        self.prompts.append(body)
        graph = body.get("prompt")
        if not isinstance(graph, dict):
            return JSONResponse(
                {"error": {"type": "no_prompt", "message": "No prompt provided"}, "node_errors": {}}, 400
            )
        node_errors = self.validate(graph)
        if node_errors:
            error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"}
            return JSONResponse({"error": {**error, "details": "", "extra_info": {}}, "node_errors": node_errors}, 400)
        prompt_id = str(uuid.uuid4())
        self._number += 1
        self._pending.append(prompt_id)
        task = asyncio.get_running_loop().create_task(self._execute(prompt_id, graph, body.get("client_id")))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JSONResponse({"prompt_id": prompt_id, "number": self._number, "node_errors": {}})

    def validate(self, graph: dict[str, Any]) -> dict[str, Any]:
        """ComfyUI-shaped node_errors for ``graph`` ({} when it is valid)."""
        found: dict[str, Any] = {}
        for node_id, node in graph.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if class_type not in NODES:
                found[node_id] = self._node_error(
                    class_type, "invalid_prompt", f"Cannot execute because node {class_type} does not exist.", ""
                )
                continue
            required, _outputs = NODES[class_type]
            inputs = node.get("inputs") or {}
            for name, kind in required.items():
                value = inputs.get(name)
                problem = self._input_problem(graph, name, kind, value)
                if problem:
                    found[node_id] = self._node_error(class_type, *problem)
                    break
        return found

    def _input_problem(self, graph: dict[str, Any], name: str, kind: Any, value: Any) -> tuple[str, str, str] | None:
        if value is None:
            return ("required_input_missing", "Required input is missing", name)
        if isinstance(kind, list):
            if value not in kind:
                return ("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {kind}")
            return None
        if kind in SCALARS:
            if not isinstance(value, SCALARS[kind]) or isinstance(value, bool):
                return ("invalid_input_type", "Failed to convert an input value", f"{name}: {value!r} is not {kind}")
            if kind == "UPLOAD" and value not in self.uploads:
                return ("custom_validation_failed", "Custom validation failed for node", f"Invalid image file: {value}")
            return None
        if not (isinstance(value, list) and len(value) == 2 and value[0] in graph):
            return ("invalid_input_type", "Bad linked input, must be a length-2 list of [node_id, slot_index]", name)
        source = graph[value[0]].get("class_type")
        outputs = NODES.get(source, ({}, ()))[1]
        if not isinstance(value[1], int) or value[1] >= len(outputs) or outputs[value[1]] != kind:
            return ("return_type_mismatch", "Return type mismatch between linked nodes", f"{name}, {source} -> {kind}")
        return None

    @staticmethod
    def _node_error(class_type: Any, kind: str, message: str, details: str) -> dict[str, Any]:
        error = {"type": kind, "message": message, "details": details, "extra_info": {}}
        return {"errors": [error], "dependent_outputs": [], "class_type": class_type}

    async def _execute(self, prompt_id: str, graph: dict[str, Any], client_id: str | None) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if prompt_id not in self._pending:
                return  # deleted from the queue
            self._pending.remove(prompt_id)
            self._running, self._interrupt = prompt_id, False
            try:
                await self._run(prompt_id, graph, client_id)
            finally:
                self._running = None

    async def _run(self, prompt_id: str, graph: dict[str, Any], client_id: str | None) -> None:
        messages: list[list[Any]] = [["execution_start", {"prompt_id": prompt_id}]]
        await self._send(client_id, "execution_start", {"prompt_id": prompt_id})
        await self._send(client_id, "execution_cached", {"nodes": [], "prompt_id": prompt_id})
        values: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        for node_id in self._order(graph):
            node = graph[node_id]
            await self._send(client_id, "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
            inputs = {k: (values[v[0]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
            if node["class_type"] == "KSampler":
                if self.mode == "execution_error":
                    data = {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": "KSampler",
                        "executed": [],
                        "exception_message": "mat1 and mat2 shapes cannot be multiplied (77x768 and 2048x320)",
                        "exception_type": "RuntimeError",
                        "traceback": [],
                        "current_inputs": {},
                        "current_outputs": {},
                    }
                    await self._send(client_id, "execution_error", data)
                    self.history[prompt_id] = self._entry(graph, {}, "error", [*messages, ["execution_error", data]])
                    return
                for step in range(1, node["inputs"]["steps"] + 1):
                    if self._interrupt:
                        data = {"prompt_id": prompt_id, "node_id": node_id, "node_type": "KSampler", "executed": []}
                        await self._send(client_id, "execution_interrupted", data)
                        self.history[prompt_id] = self._entry(
                            graph, {}, "error", [*messages, ["execution_interrupted", data]]
                        )
                        return
                    if self.mode == "slow":
                        await asyncio.sleep(self.step_seconds)
                    frame = struct.pack(">II", 1, 2) + png(seeded_png(step, 8, 8))
                    socket = self.sockets.get(client_id or "")
                    if socket is not None:
                        await socket.send_bytes(frame)
                    progress = {"value": step, "max": node["inputs"]["steps"], "prompt_id": prompt_id, "node": node_id}
                    await self._send(client_id, "progress", progress)
            values[node_id] = self._evaluate(node["class_type"], inputs)
            if node["class_type"] == "SaveImage":
                name = f"{inputs['filename_prefix']}_{len(self.files):05}_.png"
                self.files[name] = png(values[node_id])
                outputs[node_id] = {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
                await self._send(
                    client_id, "executed", {"node": node_id, "output": outputs[node_id], "prompt_id": prompt_id}
                )
        self.history[prompt_id] = self._entry(
            graph, outputs, "success", [*messages, ["execution_success", {"prompt_id": prompt_id}]]
        )
        await self._send(client_id, "execution_success", {"prompt_id": prompt_id})
        await self._send(client_id, "executing", {"node": None, "prompt_id": prompt_id})

    @staticmethod
    def _order(graph: dict[str, Any]) -> list[str]:
        done: list[str] = []

        def visit(node_id: str) -> None:
            if node_id in done:
                return
            for value in graph[node_id]["inputs"].values():
                if isinstance(value, list):
                    visit(value[0])
            done.append(node_id)

        for node_id in graph:
            visit(node_id)
        return done

    def _evaluate(self, class_type: str, inputs: dict[str, Any]) -> Any:
        """A stand-in for each node: latents are (width, height, base image) and the sampler draws from its seed."""
        if class_type in ("LoadImage", "LoadImageMask"):
            return Image.open(io.BytesIO(self.uploads[inputs["image"]])).convert("RGB")
        if class_type == "EmptyLatentImage":
            return (inputs["width"], inputs["height"], None)
        if class_type == "VAEEncode":
            return (inputs["pixels"].width, inputs["pixels"].height, inputs["pixels"])
        if class_type == "SetLatentNoiseMask":
            return inputs["samples"]
        if class_type == "KSampler":
            width, height, base = inputs["latent_image"]
            salt = f"{inputs['positive']}:{inputs['denoise']}"
            return seeded_png(inputs["seed"], width, height, salt, base)
        if class_type == "CLIPTextEncode":
            return inputs["text"]
        if class_type == "VAEDecode":
            return inputs["samples"]
        if class_type == "SaveImage":
            return inputs["images"]
        return class_type

    @staticmethod
    def _entry(graph: dict[str, Any], outputs: dict[str, Any], status: str, messages: list[Any]) -> dict[str, Any]:
        return {
            "prompt": [0, "id", graph, {}, list(outputs)],
            "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {},
        }

    async def _history(self, request: Request) -> JSONResponse:
        self.requests.append("GET /history")
        prompt_id = request.path_params["prompt_id"]
        entry = self.history.get(prompt_id)
        return JSONResponse({prompt_id: entry} if entry else {})

    async def _view(self, request: Request) -> Response:
        self.requests.append("GET /view")
        name, kind = request.query_params.get("filename", ""), request.query_params.get("type", "output")
        if kind != "output" or name not in self.files:
            return Response(status_code=404)
        return Response(self.files[name], media_type="image/png")

    async def _queue_get(self, request: Request) -> JSONResponse:
        self.requests.append("GET /queue")
        running = [[0, self._running, {}, {}, []]] if self._running else []
        return JSONResponse({"queue_running": running, "queue_pending": [[0, p, {}, {}, []] for p in self._pending]})

    async def _queue_post(self, request: Request) -> JSONResponse:
        self.requests.append("POST /queue")
        body = await request.json()
        for prompt_id in body.get("delete", []):
            self.deleted.append(prompt_id)
            if prompt_id in self._pending:
                self._pending.remove(prompt_id)
        return JSONResponse({})

    async def _interrupt_post(self, request: Request) -> Response:
        self.requests.append("POST /interrupt")
        body = await request.json() if await request.body() else {}
        self.interrupts.append(body)
        if not body.get("prompt_id") or body.get("prompt_id") == self._running:
            self._interrupt = True
        return Response(status_code=200)

    async def _upload(self, request: Request) -> JSONResponse:
        self.requests.append("POST /upload/image")
        form = await request.form()
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return JSONResponse({"error": "no image"}, status_code=400)
        data = await upload.read()
        Image.open(io.BytesIO(data)).verify()
        name = str(upload.filename)
        self.uploads[name] = data
        return JSONResponse({"name": name, "subfolder": "", "type": str(form.get("type") or "input")})
