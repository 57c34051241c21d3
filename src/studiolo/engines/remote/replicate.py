"""Replicate's predictions API as an engine (issue 18).

``remote_model`` is ``owner/name`` (an official or deployed model: POST /v1/models/{owner}/{name}/predictions) or
``owner/name:VERSION`` (POST /v1/predictions with ``version``). The input is ``{prompt, negative_prompt, width,
height, seed, num_outputs: 1, num_inference_steps, guidance_scale}``, plus for img2img/inpaint ``image``, ``mask``
(data: URLs) and ``prompt_strength``; models differ in what they take, so the ``omit`` option drops fields
("guidance_scale,negative_prompt") and ``input.NAME`` options add others. The token goes in
``Authorization: Bearer``; the ``wait`` option (1-60) sends ``Prefer: wait=N`` so a fast model answers at once.

- **One prediction per image**: every seed gets its own prediction (a model's num_outputs > 1 gives no per-image
  seeds), all created first so they run side by side, then polled in order (see polling.py for the schedule);
  the progress is parsed from the prediction's ``logs`` (tqdm bars, "9/20", "45%").
- **Cancel**: a canceled job POSTs each unfinished prediction's ``urls.cancel``; so does a failure of one of them
  (the others would be billed for nothing) and a wait over ``max_seconds``.
- **Outputs**: a URL (or a list: the first is taken), downloaded WITHOUT the token (replicate.delivery is another
  host); data: URLs are decoded.
- **Errors**: a failed prediction whose error speaks of NSFW / sensitive / flagged content → ``content_rejected``;
  out of memory or an interrupted worker → ``provider_unavailable`` (retryable); any other → ``provider_rejected``.
- **Cost**: Replicate bills most models by the second of hardware time and official models by the image. The
  row's ``price_per_image`` option wins; else ``price_per_second`` x the prediction's ``metrics.predict_time``
  (e.g. 0.001400 for an A100 80 GB at the 2025 list price: check replicate.com/pricing); with neither, the cost is
  unknown and the job's provider_cost stays empty. A submission is retried after a 429, a 5xx or a timeout: a
  5xx or a timeout after Replicate accepted it can start a second, billed prediction that nobody reads.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from PIL import Image

from studiolo.engines.base import (
    CancelCheck,
    EngineError,
    GenerationRequest,
    ModelLoadError,
    ModelRef,
)
from studiolo.engines.remote.base import invalid_reply, log, provider_error
from studiolo.engines.remote.polling import QueueEngine, data_url, option_float, same_origin, tailor
from studiolo.settings import Settings

MODEL = re.compile(r"(?P<owner>[\w.-]+)/(?P<name>[\w.-]+)(?::(?P<version>[0-9A-Za-z]+))?")
PREDICTION_ID = re.compile(r"[0-9A-Za-z_-]+")
TERMINAL = ("succeeded", "failed", "canceled")
REFUSAL_WORDS = ("nsfw", "sensitive", "flagged", "safety", "content policy", "inappropriate")
TRANSIENT_WORDS = ("out of memory", "cuda error", "interrupted", "worker restarted", "timed out")


def _refused(response: httpx.Response) -> bool:
    return any(word in response.text.lower() for word in REFUSAL_WORDS)


def failure(provider: str, error: object) -> EngineError:
    """The EngineError of a failed prediction, from the words of its ``error``."""
    text = str(error or "no error message").strip()[:300]
    lowered = text.lower()
    if any(word in lowered for word in REFUSAL_WORDS):
        return provider_error("content_rejected", f"{provider} refused the content: {text}")
    if any(word in lowered for word in TRANSIENT_WORDS):
        return provider_error("provider_unavailable", f"{provider} failed: {text}")
    return provider_error("provider_rejected", f"{provider} failed the prediction: {text}")


class ReplicateEngine(QueueEngine):
    """Models hosted at Replicate (see the module doc)."""

    name = "replicate"

    def base_url(self, settings: Settings) -> str:
        return settings.provider_replicate_base_url

    def auth_headers(self, settings: Settings) -> dict[str, str]:
        return {"Authorization": f"Bearer {settings.provider_replicate_api_token}"}

    def load(self, model: ModelRef) -> None:
        super().load(model)
        if not MODEL.fullmatch(model.remote_model or ""):
            raise ModelLoadError(f"'{model.remote_model}' is not a Replicate model (owner/name or owner/name:version).")

    # -- one job (the loop: QueueEngine) ---------------------------------------------------------------------
    unit = "prediction"

    def _submit(self, request: GenerationRequest, seed: int, should_cancel: CancelCheck) -> dict[str, Any]:
        found = MODEL.fullmatch(request.model.remote_model or "")
        if found is None:  # load() refuses such a row first
            raise ModelLoadError(f"'{request.model.remote_model}' is not a Replicate model.")
        inputs: dict[str, object] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "width": request.width,
            "height": request.height,
            "seed": seed,
            "num_outputs": 1,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
        }
        if request.kind in ("img2img", "inpaint") and request.init_image is not None:
            inputs["image"] = data_url(request.init_image)
            inputs["prompt_strength"] = request.strength
            if request.kind == "inpaint" and request.mask_image is not None:
                inputs["mask"] = data_url(request.mask_image.convert("L"))
        body: dict[str, object] = {"input": tailor(inputs, request.model.options)}
        if found["version"]:
            path = "/v1/predictions"
            body["version"] = found["version"]
        else:
            path = f"/v1/models/{found['owner']}/{found['name']}/predictions"
        wait = int(option_float(request.model.options, "wait", 0))
        headers = {"Prefer": f"wait={min(60, wait)}"} if wait > 0 else {}
        response = self.http.request(
            "POST", path, json=body, headers=headers, should_cancel=should_cancel, refusal=_refused
        )
        return self._prediction(response)

    def _prediction(self, response: httpx.Response) -> dict[str, Any]:
        body = self.http.json(response)
        if not isinstance(body, dict) or not PREDICTION_ID.fullmatch(str(body.get("id", ""))):
            raise invalid_reply(self.name, "a prediction without an id")
        return body

    def _ended(self, handle: dict[str, Any]) -> bool:
        return handle.get("status") in TERMINAL  # Prefer: wait may have let it finish already

    def _status(
        self, request: GenerationRequest, handle: dict[str, Any], should_cancel: CancelCheck
    ) -> tuple[bool, str]:
        url = self._url(handle, "get", f"/v1/predictions/{handle['id']}")
        # In place: the loop's list must see the last status (a failed prediction is not canceled).
        handle.update(self._prediction(self.http.request("GET", url, should_cancel=should_cancel)))
        return handle.get("status") in TERMINAL, str(handle.get("logs") or "")

    def _result(
        self, request: GenerationRequest, handle: dict[str, Any], should_cancel: CancelCheck
    ) -> tuple[Image.Image, float | None]:
        status = handle["status"]
        if status == "failed":
            raise failure(self.name, handle.get("error"))
        if status == "canceled":
            raise provider_error("provider_rejected", f"{self.name} reports the prediction canceled.")
        output = handle.get("output")
        if isinstance(output, list):
            output = output[0] if output else None
        return self.downloads.fetch(output, should_cancel), self._cost(request.model, handle)

    def _unfinished(self, handle: dict[str, Any]) -> bool:
        return handle.get("status") not in TERMINAL

    def _url(self, prediction: dict[str, Any], which: str, fallback: str) -> str:
        """The prediction's own ``urls.get``/``urls.cancel`` when on Replicate's API host (the token goes there),
        else the documented path."""
        urls = prediction.get("urls")
        url = urls.get(which) if isinstance(urls, dict) else None
        return url if isinstance(url, str) and same_origin(url, self.base_url(self.settings)) else fallback

    def _cancel(self, request: GenerationRequest, prediction: dict[str, Any]) -> None:
        """Ask Replicate to stop ``prediction`` (best effort: the job ends either way)."""
        url = self._url(prediction, "cancel", f"/v1/predictions/{prediction['id']}/cancel")
        try:
            self.http.request("POST", url, retry=False)
        except EngineError as exc:
            log.warning("replicate: canceling prediction %s failed: %s", prediction["id"], exc)

    def _cost(self, model: ModelRef, prediction: dict[str, Any]) -> float | None:
        """What this prediction cost (see the module doc); None when the row gives no price."""
        if "price_per_image" in model.options:
            return option_float(model.options, "price_per_image", 0.0)
        per_second = option_float(model.options, "price_per_second", -1.0)
        metrics = prediction.get("metrics")
        seconds = metrics.get("predict_time") if isinstance(metrics, dict) else None
        if per_second < 0 or not isinstance(seconds, int | float):
            return None
        return round(per_second * float(seconds), 6)
