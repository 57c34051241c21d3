"""Google Gemini image generation as an engine ("nano banana": gemini-2.5-flash-image and its kin).

``POST {base}/v1beta/models/{remote_model}:generateContent`` with the key in the ``x-goog-api-key`` header (never the
``?key=`` query parameter: URLs get logged). The body's parts are the prompt and, for img2img, the init image as
``inline_data``; ``generationConfig`` asks for images (``responseModalities``), the aspect ratio nearest the request
(``imageConfig.aspectRatio``) and the image's seed. One call per seed, so image k is what seed k makes alone, as far
as the model honours seeds. The picture comes back in ``candidates[0].content.parts[].inlineData`` (``inline_data``
accepted too) at the model's own size for that ratio: it is fitted to the requested size (replies.py).

Not honoured: negative prompts (Gemini has none; the text is dropped), img2img strength, steps, guidance; no
inpainting (Gemini takes no mask). A blocked prompt (``promptFeedback.blockReason``) or a candidate stopped for
SAFETY, PROHIBITED_CONTENT, IMAGE_SAFETY, ... is ``content_rejected``; a reply without a picture otherwise is
``provider_invalid_reply``. Gemini answers a bad key with 400 API_KEY_INVALID: that is ``provider_auth_failed``.
Cost: the ``price_per_image`` option, else 0.039 US dollars (gemini-2.5-flash-image's 2025 list price: 1290 output
tokens at $30 per million).
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

import httpx
from PIL import Image

from studiolo.engines.base import (
    CancelCheck,
    Capabilities,
    EngineError,
    GeneratedImage,
    GenerationRequest,
    ModelRef,
    StepCallback,
)
from studiolo.engines.remote.base import RemoteEngine, decode_b64_image, invalid_reply, png_bytes, provider_error
from studiolo.engines.remote.replies import fit, one_call_per_seed
from studiolo.settings import Settings

REFUSED_REASONS = frozenset(
    {"SAFETY", "PROHIBITED_CONTENT", "IMAGE_SAFETY", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_PROHIBITED_CONTENT"}
)
# The aspect ratios imageConfig takes, as width / height.
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The supported aspect ratio closest to ``width`` x ``height`` (by the factor between the two ratios)."""

    def distance(ratio: str) -> float:
        w, _, h = ratio.partition(":")
        wanted, offered = width / height, int(w) / int(h)
        return max(wanted, offered) / min(wanted, offered)

    return min(ASPECT_RATIOS, key=distance)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _key_invalid(response: httpx.Response) -> bool:
    """Gemini's answer to a bad key: 400 INVALID_ARGUMENT with an ErrorInfo whose reason is API_KEY_INVALID."""
    try:
        details = _obj(response.json().get("error")).get("details")
    except (ValueError, AttributeError):
        return False
    return isinstance(details, list) and any(_obj(d).get("reason") == "API_KEY_INVALID" for d in details)


class GeminiImageEngine(RemoteEngine):
    name: ClassVar[str] = "gemini"
    default_price: ClassVar[float] = 0.039

    def base_url(self, settings: Settings) -> str:
        return settings.provider_gemini_base_url

    def auth_headers(self, settings: Settings) -> dict[str, str]:
        return {"x-goog-api-key": settings.provider_gemini_api_key}

    def capabilities(self, model: ModelRef) -> Capabilities:
        return Capabilities(txt2img=True, img2img=True, inpaint=False)

    def _refusal(self, response: httpx.Response) -> bool:
        if _key_invalid(response):
            raise provider_error("provider_auth_failed", "gemini refused the API key (API_KEY_INVALID).")
        return False  # Gemini refuses content in a 200 reply (promptFeedback / finishReason), read in _image

    def _generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        if request.kind not in ("txt2img", "img2img"):
            raise EngineError(f"Gemini cannot do {request.kind}.", code="unsupported_task")
        parts: list[dict[str, Any]] = [{"text": request.prompt}]
        if request.kind == "img2img":
            if request.init_image is None:
                raise EngineError("img2img needs an init image.", code="invalid_input")
            data = base64.b64encode(png_bytes(fit(request.init_image, request.width, request.height))).decode()
            parts.append({"inline_data": {"mime_type": "image/png", "data": data}})
        modalities = request.model.options.get("response_modalities")
        config: dict[str, Any] = {
            "responseModalities": modalities if isinstance(modalities, list) else ["IMAGE"],
            "imageConfig": {"aspectRatio": nearest_aspect_ratio(request.width, request.height)},
        }
        url = f"/v1beta/models/{request.model.remote_model}:generateContent"

        def call(seed: int) -> Image.Image:
            body = {"contents": [{"parts": parts}], "generationConfig": {**config, "seed": seed}}
            response = self.http.request("POST", url, json=body, should_cancel=should_cancel, refusal=self._refusal)
            return self._image(self.http.json(response))

        return one_call_per_seed(request, on_step, should_cancel, self.price(request.model), call)

    def _image(self, reply: Any) -> Image.Image:
        """The first picture of a generateContent reply, or why there is none."""
        reply = _obj(reply)
        blocked = _obj(reply.get("promptFeedback")).get("blockReason")
        if blocked:
            raise provider_error("content_rejected", f"gemini blocked the prompt ({blocked}).")
        candidates = reply.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            raise invalid_reply(self.name, "a reply without candidates")
        candidate = _obj(candidates[0])
        for part in _obj(candidate.get("content")).get("parts") or []:
            inline = _obj(_obj(part).get("inlineData") or _obj(part).get("inline_data"))
            mime = inline.get("mimeType") or inline.get("mime_type") or ""
            if inline and isinstance(mime, str) and mime.startswith("image/"):
                return decode_b64_image(inline.get("data"), self.name)
        reason = candidate.get("finishReason")
        if reason in REFUSED_REASONS:
            raise provider_error("content_rejected", f"gemini stopped for {reason}.")
        said = f" (finishReason {reason})" if reason else ""
        raise invalid_reply(self.name, f"a reply without an image{said}")
