"""fal's queue API as an engine (issue 18).

``remote_model`` is the app id (``fal-ai/flux/schnell``, ``fal-ai/fast-sdxl``, ...). A request is queued with
POST {base}/{app id} and ``{prompt, image_size: {width, height}, seed, num_images: 1, num_inference_steps,
guidance_scale, negative_prompt, enable_safety_checker}`` (plus ``image_url``/``mask_url`` data: URLs and
``strength`` for img2img/inpaint apps, which a row enables with ``kinds=txt2img,img2img,inpaint``); the ``omit``
and ``input.NAME`` options fit the body to an app. The key goes in ``Authorization: Key``.

- **Queue**: the reply gives ``request_id`` and the status/response/cancel URLs; the engine polls the status
  (``?logs=1``: IN_QUEUE with queue_position, IN_PROGRESS with logs, COMPLETED), then GETs the response
  ``{images: [{url, width, height, content_type}], seed, has_nsfw_concepts}`` and downloads the image WITHOUT the
  key (fal.media is another host). The URLs fal returns are used only when they are on the configured queue host;
  else the documented paths ({app owner}/{app name}/requests/{id}/status|cancel, without the app's sub-path).
- **One request per image**, all queued first, then read in order; progress comes from the logs.
- **Safety**: ``enable_safety_checker`` is on unless the row's ``safety_checker=false`` option; fal then blacks
  out a flagged image and says so in ``has_nsfw_concepts``: any flagged image fails the whole job with
  ``content_rejected`` (a job returns all its images or none, and a black square is not an image worth keeping).
- **Cancel**: PUT the cancel URL of every unfinished request (a job canceled, another failed, ``max_seconds``).
- **Errors**: a 422 (the app's input validation) → ``provider_rejected`` with fal's detail; a COMPLETED status
  carrying an ``error`` → ``provider_rejected``; 401/403 → ``provider_auth_failed``.
- **Cost**: fal prices apps per image or per megapixel; the row's ``price_per_image`` option, else
  ``price_per_megapixel`` x the image's megapixels rounded up (fal's billing), else unknown (provider_cost empty).
"""

from __future__ import annotations

import math
import re
from typing import Any

from PIL import Image

from studiolo.engines.base import CancelCheck, EngineError, GenerationRequest, ModelLoadError, ModelRef
from studiolo.engines.remote.base import invalid_reply, log, provider_error
from studiolo.engines.remote.polling import QueueEngine, data_url, option_float, same_origin, tailor
from studiolo.settings import Settings

APP = re.compile(r"[\w.-]+/[\w.-]+(?:/[\w.-]+)*")
REQUEST_ID = re.compile(r"[0-9A-Za-z_-]+")
RUNNING = ("IN_QUEUE", "IN_PROGRESS")


class FalEngine(QueueEngine):
    """Apps hosted at fal (see the module doc)."""

    name = "fal"

    def base_url(self, settings: Settings) -> str:
        return settings.provider_fal_base_url

    def auth_headers(self, settings: Settings) -> dict[str, str]:
        return {"Authorization": f"Key {settings.provider_fal_api_key}"}

    def load(self, model: ModelRef) -> None:
        super().load(model)
        if not APP.fullmatch(model.remote_model or ""):
            raise ModelLoadError(f"'{model.remote_model}' is not a fal app id (owner/app[/path]).")

    # -- one job (the loop: QueueEngine) ---------------------------------------------------------------------
    def _submit(self, request: GenerationRequest, seed: int, should_cancel: CancelCheck) -> dict[str, Any]:
        options = request.model.options
        body: dict[str, object] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "image_size": {"width": request.width, "height": request.height},
            "seed": seed,
            "num_images": 1,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "enable_safety_checker": str(options.get("safety_checker", True)).lower() not in ("false", "0", "no"),
        }
        if request.kind in ("img2img", "inpaint") and request.init_image is not None:
            body["image_url"] = data_url(request.init_image)
            body["strength"] = request.strength
            if request.kind == "inpaint" and request.mask_image is not None:
                body["mask_url"] = data_url(request.mask_image.convert("L"))
        response = self.http.request(
            "POST", f"/{request.model.remote_model}", json=tailor(body, options), should_cancel=should_cancel
        )
        reply = self.http.json(response)
        if not isinstance(reply, dict) or not REQUEST_ID.fullmatch(str(reply.get("request_id", ""))):
            raise invalid_reply(self.name, "a queue reply without a request_id")
        return reply

    def _status(
        self, request: GenerationRequest, handle: dict[str, Any], should_cancel: CancelCheck
    ) -> tuple[bool, str]:
        status_url = self._url(request, handle, "status_url", "/status")
        reply = self.http.json(self.http.request("GET", status_url, params={"logs": "1"}, should_cancel=should_cancel))
        status = reply.get("status") if isinstance(reply, dict) else None
        if status == "COMPLETED":
            handle["error"] = reply.get("error")
            return True, ""
        if status not in RUNNING:
            raise invalid_reply(self.name, f"a queue status of {str(status)[:40]!r}")
        logs = reply.get("logs")
        return False, "\n".join(str(e.get("message", "")) for e in logs if isinstance(e, dict)) if logs else ""

    def _result(
        self, request: GenerationRequest, handle: dict[str, Any], should_cancel: CancelCheck
    ) -> tuple[Image.Image, float | None]:
        if handle.get("error"):
            raise provider_error("provider_rejected", f"{self.name} failed the request: {str(handle['error'])[:300]}")
        result = self.http.json(
            self.http.request("GET", self._url(request, handle, "response_url", ""), should_cancel=should_cancel)
        )
        if not isinstance(result, dict):
            raise invalid_reply(self.name, "a result that is not an object")
        flagged = result.get("has_nsfw_concepts")
        if isinstance(flagged, list) and any(flagged):
            raise provider_error("content_rejected", f"{self.name}'s safety checker flagged the image.")
        handle["done"] = True
        outputs = result.get("images")
        first = outputs[0] if isinstance(outputs, list) and outputs else None
        if not isinstance(first, dict):
            raise invalid_reply(self.name, "a result without images")
        image = self.downloads.fetch(first.get("url"), should_cancel)
        return image, self._cost(request, image.size)

    def _unfinished(self, handle: dict[str, Any]) -> bool:
        return not handle.get("done")

    def _url(self, request: GenerationRequest, entry: dict[str, Any], key: str, suffix: str) -> str:
        """fal's own URL for ``key`` when it is on the queue host (the key goes there), else the documented path:
        the app's owner/name (no sub-path) + /requests/{id} + ``suffix``."""
        url = entry.get(key)
        if isinstance(url, str) and same_origin(url, self.base_url(self.settings)):
            return url
        root = "/".join((request.model.remote_model or "").split("/")[:2])
        return f"/{root}/requests/{entry['request_id']}{suffix}"

    def _cancel(self, request: GenerationRequest, entry: dict[str, Any]) -> None:
        """Ask fal to drop a queued request (best effort: one already running may finish and bill)."""
        try:
            self.http.request("PUT", self._url(request, entry, "cancel_url", "/cancel"), retry=False)
        except EngineError as exc:
            log.warning("fal: canceling request %s failed: %s", entry["request_id"], exc)

    def _cost(self, request: GenerationRequest, size: tuple[int, int]) -> float | None:
        """What one image cost (see the module doc); None when the row gives no price."""
        options = request.model.options
        if "price_per_image" in options:
            return option_float(options, "price_per_image", 0.0)
        per_mp = option_float(options, "price_per_megapixel", -1.0)
        if per_mp < 0:
            return None
        return round(per_mp * math.ceil(size[0] * size[1] / 1_000_000), 6)
