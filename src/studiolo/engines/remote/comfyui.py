"""A ComfyUI server as a worker (issue 18): a workflow per image, followed on ComfyUI's WebSocket.

- **Where**: STUDIOLO_PROVIDER_COMFYUI_BASE_URL (or the model's ``base_url`` option). ComfyUI has no auth of its own:
  put it on a private network or behind a proxy.
- **Workflow**: the model's ``workflow`` option (a path to a workflow saved with "Save (API Format)", with
  placeholders: comfyui_workflow.py lists them) or the built-in txt2img / img2img / inpaint graphs
  (CheckpointLoaderSimple ``ckpt_name`` = the remote model -> CLIPTextEncode x2 -> EmptyLatentImage or
  LoadImage+VAEEncode (+LoadImageMask+SetLatentNoiseMask) -> KSampler -> VAEDecode -> SaveImage).
- **Seeds**: ComfyUI draws one noise tensor for a whole latent batch from one seed, so a batch of 4 is not
  seeds s..s+3 and image k would not equal its seed made alone. One prompt is queued per image, batch size 1.
- **Flow**: ``POST /prompt {prompt, client_id}`` (validation errors come back as ``node_errors``), then the
  WebSocket ``/ws?clientId=`` says ``progress`` (-> on_step), binary preview frames (-> the preview),
  ``execution_error`` / ``execution_interrupted``, and ``execution_success`` (or ``executing`` with node null);
  ``GET /history/{id}`` names the saved images, ``GET /view`` gives their bytes. When the WebSocket cannot be
  opened (or drops) the engine polls ``/history`` instead, without step progress.
- **Cancel**: a queued prompt is deleted (``POST /queue {delete}``), a running one interrupted (``POST /interrupt``
  with its prompt_id: newer ComfyUI stops only that prompt, older ones whatever runs, which is then ours).
- **Cost**: 0 unless the model's ``price_per_image`` option says otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import json
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection, connect

from studiolo.engines.base import (
    CancelCheck,
    Capabilities,
    EngineError,
    GeneratedImage,
    GenerationCanceled,
    GenerationRequest,
    ModelLoadError,
    ModelRef,
    StepCallback,
)
from studiolo.engines.remote.base import RemoteEngine, decode_image, invalid_reply, png_bytes, provider_error
from studiolo.engines.remote.comfyui_workflow import (
    SAMPLERS,
    SCHEDULERS,
    Graph,
    builtin_template,
    comfy_sampler,
    fill,
    load_template,
    placeholders_in,
)
from studiolo.settings import Settings

PREVIEW_IMAGE = 1  # ComfyUI's BinaryEventTypes.PREVIEW_IMAGE: 4 bytes event, 4 bytes format, then JPEG/PNG bytes
MESSAGE_LIMIT = 300


class ComfyUIEngine(RemoteEngine):
    """ComfyUI's ``/prompt`` + WebSocket API on a server of your own."""

    name = "comfyui"
    default_price = 0.0
    # Seconds between two checks of the cancel flag (and /history polls without a WebSocket); tests make it shorter.
    poll_seconds = 0.5

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None):
        super().__init__(settings, transport=transport)
        self._templates: dict[str, tuple[float, Graph]] = {}

    def base_url(self, settings: Settings) -> str:
        return settings.provider_comfyui_base_url

    def _base(self, model: ModelRef) -> str:
        option = model.options.get("base_url")
        base = option if isinstance(option, str) and option else self.settings.provider_comfyui_base_url
        return base.rstrip("/")

    # -- the workflow --------------------------------------------------------------------------------------------
    def template(self, model: ModelRef, kind: str) -> Graph:
        """The model's workflow file (read again when it changes) or the built-in graph for ``kind``."""
        path = model.options.get("workflow")
        if not isinstance(path, str) or not path:
            return builtin_template(kind)
        try:
            mtime = Path(path).expanduser().stat().st_mtime
            cached = self._templates.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, load_template(path))
                self._templates[path] = cached
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Model '{model.id}': {exc}") from exc
        return cached[1]

    def capabilities(self, model: ModelRef) -> Capabilities:
        custom = isinstance(model.options.get("workflow"), str) and bool(model.options.get("workflow"))
        try:
            used = placeholders_in(self.template(model, "txt2img")) if custom else {"image", "mask"}
        except ModelLoadError:
            used = set()  # load() says what is wrong with the file
        return Capabilities(
            txt2img=True,
            img2img="image" in used,
            inpaint={"image", "mask"} <= used,
            samplers=tuple(SAMPLERS),
            schedulers=SCHEDULERS,
        )

    def load(self, model: ModelRef) -> None:
        super().load(model)
        self.template(model, "txt2img")

    # -- generating ----------------------------------------------------------------------------------------------
    def _generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        model = request.model
        template = self.template(model, request.kind)
        values = self.values(request)
        if request.kind in ("img2img", "inpaint"):
            values.update(self.upload_inputs(request, template, should_cancel))
        client_id = uuid.uuid4().hex
        price = self.price(model)
        out = []
        with contextlib.ExitStack() as stack:
            # Opened before the first prompt is queued, so that none of its messages can be missed.
            ws = self._connect(model, client_id, stack)
            for k, seed in enumerate(request.seeds):
                graph = fill(template, {**values, "seed": seed})
                prompt_id = self._queue(model, graph, client_id, should_cancel)
                image_no = k + 1 if request.n > 1 else 0
                entry, ws = self._follow(ws, model, prompt_id, on_step, should_cancel, image_no)
                out.append(GeneratedImage(image=self._fetch(model, entry), seed=seed, cost=price))
        return out

    def values(self, request: GenerationRequest) -> dict[str, Any]:
        """The placeholders' values for ``request`` (the seed is set per image)."""
        sampler, scheduler = comfy_sampler(request.sampler, request.scheduler)
        return {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": request.width,
            "height": request.height,
            "steps": request.steps,
            "cfg": float(request.guidance),
            "denoise": float(request.strength) if request.kind in ("img2img", "inpaint") else 1.0,
            "sampler_name": sampler,
            "scheduler": scheduler,
            "model": request.model.remote_model or "",
        }

    def upload_inputs(self, request: GenerationRequest, template: Graph, should_cancel: CancelCheck) -> dict[str, str]:
        """Upload the init image (and mask) at the job's size; their names for ``{{image}}`` / ``{{mask}}``."""
        used = placeholders_in(template)
        if request.init_image is None or "image" not in used:
            raise EngineError(f"This ComfyUI workflow cannot run {request.kind} jobs.", code="invalid_request")
        size = (request.width, request.height)
        names = {"image": self._upload(request.model, request.init_image.convert("RGB").resize(size), should_cancel)}
        if request.kind == "inpaint":
            if request.mask_image is None or "mask" not in used:
                raise EngineError("inpaint needs a mask image and a workflow with {{mask}}.", code="invalid_request")
            names["mask"] = self._upload(request.model, request.mask_image.convert("RGB").resize(size), should_cancel)
        return names

    def _upload(self, model: ModelRef, image: Image.Image, should_cancel: CancelCheck) -> str:
        name = f"studiolo-{uuid.uuid4().hex}.png"
        response = self.http.request(
            "POST",
            f"{self._base(model)}/upload/image",
            files={"image": (name, png_bytes(image), "image/png")},
            data={"type": "input", "overwrite": "true"},
            should_cancel=should_cancel,
        )
        reply = self.http.json(response)
        if not isinstance(reply, dict) or not isinstance(reply.get("name"), str):
            raise invalid_reply(self.name, "an upload reply without a name")
        subfolder = reply.get("subfolder")
        return f"{subfolder}/{reply['name']}" if isinstance(subfolder, str) and subfolder else str(reply["name"])

    def _queue(self, model: ModelRef, graph: Graph, client_id: str, should_cancel: CancelCheck) -> str:
        """POST /prompt; the prompt_id, or ``provider_rejected`` with the failing nodes' own messages."""
        refused: list[httpx.Response] = []

        def keep(response: httpx.Response) -> bool:
            refused.append(response)
            return False

        try:
            response = self.http.request(
                "POST",
                f"{self._base(model)}/prompt",
                json={"prompt": graph, "client_id": client_id},
                should_cancel=should_cancel,
                refusal=keep,
            )
        except EngineError as exc:
            if refused and exc.code == "provider_rejected":
                raise provider_error(
                    "provider_rejected", f"comfyui refused the workflow: {_refusal(refused[-1])}"
                ) from exc
            raise
        reply = self.http.json(response)
        if not isinstance(reply, dict) or not isinstance(reply.get("prompt_id"), str):
            raise invalid_reply(self.name, "a /prompt reply without a prompt_id")
        if reply.get("node_errors"):
            self._drop(model, reply["prompt_id"])
            raise provider_error("provider_rejected", f"comfyui refused the workflow: {_node_errors(reply)}")
        return str(reply["prompt_id"])

    # -- following a prompt --------------------------------------------------------------------------------------
    def _connect(self, model: ModelRef, client_id: str, stack: contextlib.ExitStack) -> ClientConnection | None:
        """The WebSocket for ``client_id``'s messages (closed with ``stack``), or None: the engine polls /history."""
        url = "ws" + self._base(model).removeprefix("http") + f"/ws?clientId={client_id}"
        try:
            opening = connect(url, open_timeout=min(10.0, self.settings.provider_timeout_seconds), max_size=2**24)
        except (OSError, WebSocketException, TimeoutError):
            return None
        return stack.enter_context(opening)

    def _follow(
        self,
        ws: ClientConnection | None,
        model: ModelRef,
        prompt_id: str,
        on_step: StepCallback,
        should_cancel: CancelCheck,
        image_no: int,
    ) -> tuple[dict[str, Any], ClientConnection | None]:
        """Wait for ``prompt_id`` to finish; its /history entry and the WebSocket (None once it dropped)."""
        if ws is None:
            return self._poll(model, prompt_id, should_cancel), None
        preview: bytes | None = None
        quiet_since = time.monotonic()
        while True:
            if should_cancel():
                self._cancel(model, prompt_id)
                raise GenerationCanceled()
            try:
                message = ws.recv(timeout=self.poll_seconds)
            except TimeoutError:
                if time.monotonic() - quiet_since > self.settings.provider_timeout_seconds:
                    quiet_since = time.monotonic()  # a missed message? ask the server itself
                    entry = self._finished(model, prompt_id)
                    if entry is not None:
                        return entry, ws
                continue
            except ConnectionClosed:
                return self._poll(model, prompt_id, should_cancel), None
            quiet_since = time.monotonic()
            if isinstance(message, bytes):
                if len(message) > 8 and struct.unpack(">I", message[:4])[0] == PREVIEW_IMAGE:
                    preview = message[8:]
                continue
            kind, data = _event(message)
            if data.get("prompt_id") != prompt_id:
                continue
            if kind == "progress" and isinstance(data.get("value"), int) and isinstance(data.get("max"), int):
                look = functools.partial(self._preview, preview) if preview else None
                on_step(min(data["value"], data["max"]), data["max"], preview=look, image=image_no)
            elif kind == "execution_error":
                raise _execution_error(data)
            elif kind == "execution_interrupted":
                raise provider_error("provider_rejected", "comfyui: the prompt was interrupted at the server.")
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
                entry = self._finished(model, prompt_id)
                if entry is None:
                    raise invalid_reply(self.name, f"no history for the finished prompt {prompt_id}")
                return entry, ws

    def _poll(self, model: ModelRef, prompt_id: str, should_cancel: CancelCheck) -> dict[str, Any]:
        """Without a WebSocket: GET /history until the prompt is there (no step progress)."""
        while True:
            if should_cancel():
                self._cancel(model, prompt_id)
                raise GenerationCanceled()
            entry = self._finished(model, prompt_id)
            if entry is not None:
                return entry
            time.sleep(self.poll_seconds)

    def _finished(self, model: ModelRef, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's /history entry once it is done (an error in it raises), else None."""
        reply = self.http.json(self.http.request("GET", f"{self._base(model)}/history/{prompt_id}"))
        entry = reply.get(prompt_id) if isinstance(reply, dict) else None
        if not isinstance(entry, dict):
            return None
        found = entry.get("status")
        status: dict[str, Any] = found if isinstance(found, dict) else {}
        if status.get("status_str") == "error":
            for item in status.get("messages") or []:
                if isinstance(item, list) and len(item) == 2 and item[0] == "execution_error":
                    raise _execution_error(item[1] if isinstance(item[1], dict) else {})
            raise provider_error("provider_rejected", "comfyui: the prompt failed.")
        if status and not status.get("completed", True):
            return None
        return entry

    def _fetch(self, model: ModelRef, entry: dict[str, Any]) -> Image.Image:
        """The first saved image of a history entry (SaveImage's "output" before any "temp" preview), decoded."""
        refs = [
            ref
            for _node, output in sorted((entry.get("outputs") or {}).items())
            if isinstance(output, dict)
            for ref in output.get("images") or []
            if isinstance(ref, dict) and isinstance(ref.get("filename"), str)
        ]
        refs.sort(key=lambda ref: ref.get("type") != "output")
        if not refs:
            raise invalid_reply(self.name, "a finished prompt without images (does the workflow save one?)")
        ref = refs[0]
        params = {
            "filename": ref["filename"],
            "subfolder": ref.get("subfolder") or "",
            "type": ref.get("type") or "output",
        }
        response = self.http.request("GET", f"{self._base(model)}/view", params=params)
        return decode_image(response.content, self.name)

    def _preview(self, data: bytes) -> Image.Image | None:
        try:
            return decode_image(data, self.name)
        except EngineError:
            return None

    # -- canceling -----------------------------------------------------------------------------------------------
    def _cancel(self, model: ModelRef, prompt_id: str) -> None:
        """Delete ``prompt_id`` when it is still queued, interrupt it when it runs; best effort."""
        base = self._base(model)
        try:
            queue = self.http.client.get(f"{base}/queue", timeout=5.0).json()
            pending = {item[1] for item in queue.get("queue_pending", []) if isinstance(item, list) and len(item) > 1}
            if prompt_id in pending:
                self.http.client.post(f"{base}/queue", json={"delete": [prompt_id]}, timeout=5.0)
            else:
                self.http.client.post(f"{base}/interrupt", json={"prompt_id": prompt_id}, timeout=5.0)
        except (httpx.HTTPError, ValueError, AttributeError):
            pass  # the job is canceled either way

    def _drop(self, model: ModelRef, prompt_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):  # best effort: it would fail validation at run time anyway
            self.http.client.post(f"{self._base(model)}/queue", json={"delete": [prompt_id]}, timeout=5.0)


def _event(message: str) -> tuple[str, dict[str, Any]]:
    try:
        event = json.loads(message)
    except ValueError:
        return "", {}
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        return "", {}
    return str(event.get("type", "")), event["data"]


def _execution_error(data: dict[str, Any]) -> EngineError:
    """A node's failure while running: out of memory may pass on a retry; anything else is the workflow's."""
    node = f"node {data.get('node_id')} ({data.get('node_type')})" if data.get("node_id") else "a node"
    said = str(data.get("exception_message") or "no message").strip()[:MESSAGE_LIMIT]
    code = "provider_unavailable" if "OutOfMemory" in str(data.get("exception_type")) else "provider_rejected"
    return provider_error(code, f"comfyui failed in {node}: {said}")


def _node_errors(body: dict[str, Any]) -> str:
    """ComfyUI's ``node_errors`` as one line: each node's class and first error's message and details."""
    parts = []
    for node_id, found in (body.get("node_errors") or {}).items():
        if not isinstance(found, dict):
            continue
        errors = [e for e in found.get("errors") or [] if isinstance(e, dict)]
        first = errors[0] if errors else {}
        text = ": ".join(str(first[k]) for k in ("message", "details") if first.get(k))
        parts.append(f"node {node_id} ({found.get('class_type', '?')}): {text or 'invalid'}")
    return "; ".join(parts)[:MESSAGE_LIMIT]


def _refusal(response: httpx.Response) -> str:
    """What a 400 from /prompt says: the failing nodes, else the error's own message."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:MESSAGE_LIMIT] or f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    if body.get("node_errors"):
        return _node_errors(body)
    error = body.get("error")
    if isinstance(error, dict):
        return ": ".join(str(error[k]) for k in ("message", "details") if error.get(k))[:MESSAGE_LIMIT]
    return str(error or f"HTTP {response.status_code}")[:MESSAGE_LIMIT]
