"""Any OpenAI-compatible images server as an engine: OpenAI (gpt-image-*, DALL·E), LocalAI, another Studiolo's /v1.

- txt2img: ``POST {base}/images/generations`` (JSON); img2img and inpaint: ``POST {base}/images/edits`` (multipart:
  ``image``, and for inpainting ``mask`` in OpenAI's convention, transparent = repaint).
- The key (STUDIOLO_PROVIDER_OPENAI_API_KEY) travels as ``Authorization: Bearer`` to the configured base URL only. A
  model whose ``base_url`` option names another server (a LocalAI) gets no OpenAI key; its ``api_key_env`` option
  may name an environment variable holding that server's own key.
- Seeds and negative prompts: OpenAI has neither; a model with the ``extra_params`` option (LocalAI, Studiolo) gets
  ``seed``, ``negative_prompt`` and ``steps`` at the top level of the body, one call per seed, so image k is the same
  picture as seed k alone. Without it the negative prompt is dropped, the images of a job come in as few calls as
  the server allows (``max_n``; DALL·E 3 makes one per call) and take the job's seeds in order, for the record only.
- Replies: ``b64_json`` (asked for, except from GPT image models, which always answer so and refuse the field), or
  ``url`` (downloaded, without the key). A reply of another size is fitted to the requested one (replies.py).
- Refusals: a 400 whose ``error.code`` is ``content_policy_violation`` or ``moderation_blocked`` -> content_rejected.
- Cost per image: the ``price_per_image`` option, else PRICES by model name, else 0 (a server of your own).
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

import httpx
from PIL import Image

from studiolo.engines.base import (
    CancelCheck,
    Capabilities,
    EngineError,
    GeneratedImage,
    GenerationCanceled,
    GenerationRequest,
    ModelRef,
    StepCallback,
)
from studiolo.engines.remote.base import RemoteEngine, decode_b64_image, decode_image, invalid_reply, png_bytes
from studiolo.engines.remote.replies import fit
from studiolo.settings import Settings

# US dollars per image at 1024x1024 in the default quality (medium / standard), OpenAI's list prices of 2025. Other
# sizes and qualities cost otherwise: set ``price_per_image`` on the model to what you pay.
PRICES: dict[str, float] = {
    "gpt-image-1": 0.042,
    "gpt-image-1-mini": 0.011,
    "dall-e-3": 0.04,
    "dall-e-2": 0.02,
}
REFUSAL_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
# GPT image models always answer in base64 and reject ``response_format``.
_ALWAYS_B64_PREFIXES = ("gpt-image", "chatgpt-image")


def _is_refusal(response: httpx.Response) -> bool:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") in REFUSAL_CODES


def openai_mask(mask: Image.Image, width: int, height: int) -> Image.Image:
    """Our mask (white = repaint) as OpenAI wants it: an RGBA PNG transparent where the picture is to be edited."""
    repaint = fit(mask, width, height, mode="L").point(lambda v: 255 if v >= 128 else 0)
    out = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    out.putalpha(repaint.point(lambda v: 255 - v))
    return out


class OpenAIImagesEngine(RemoteEngine):
    name: ClassVar[str] = "openai"

    def base_url(self, settings: Settings) -> str:
        return settings.provider_openai_base_url

    def capabilities(self, model: ModelRef) -> Capabilities:
        # The ``edits`` option turns image-to-image off for a server without /images/edits.
        edits = model.options.get("edits", True) is not False
        return Capabilities(txt2img=True, img2img=edits, inpaint=edits)

    def price(self, model: ModelRef) -> float:
        value = model.options.get("price_per_image")
        if isinstance(value, int | float):
            return float(value)
        return PRICES.get(model.remote_model or "", self.default_price)

    def _target(self, model: ModelRef) -> tuple[str, dict[str, str]]:
        """The base URL for ``model`` and the headers that authenticate to it (the OpenAI key only at its own URL)."""
        override = model.options.get("base_url")
        if isinstance(override, str) and override:
            env = model.options.get("api_key_env")
            key = os.environ.get(env, "") if isinstance(env, str) and env else ""
            return override.rstrip("/"), ({"Authorization": f"Bearer {key}"} if key else {})
        key = self.settings.provider_openai_api_key
        return str(self.http.client.base_url).rstrip("/"), {"Authorization": f"Bearer {key}"}

    def _generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        model = request.model
        if not self.capabilities(model).supports(request.kind):
            raise EngineError(f"This server takes no image edits ({request.kind}).", code="unsupported_task")
        extra = model.options.get("extra_params") is True
        if extra:
            per_call = 1  # one seed per call: the server honours it
        else:
            max_n = model.options.get("max_n")
            per_call = (
                int(max_n) if isinstance(max_n, int) and max_n > 0 else 1 if model.remote_model == "dall-e-3" else 10
            )
        calls = math.ceil(request.n / per_call)
        images: list[Image.Image] = []
        on_step(0, calls)
        for call in range(calls):
            if call and should_cancel():
                raise GenerationCanceled()
            seeds = request.seeds[call * per_call : (call + 1) * per_call]
            images.extend(self._call(request, seeds, extra, should_cancel))
            on_step(call + 1, calls)
        price = self.price(model)
        return [
            GeneratedImage(fit(image, request.width, request.height), seed, cost=price)
            for image, seed in zip(images, request.seeds, strict=False)
        ]

    def _call(
        self, request: GenerationRequest, seeds: list[int], extra: bool, should_cancel: CancelCheck
    ) -> list[Image.Image]:
        """One request for ``len(seeds)`` images."""
        model = request.model
        base, headers = self._target(model)
        fields: dict[str, Any] = {
            "model": model.remote_model,
            "prompt": request.prompt,
            "n": len(seeds),
            "size": f"{request.width}x{request.height}",
        }
        remote = model.remote_model or ""
        if not remote.startswith(_ALWAYS_B64_PREFIXES):
            fields["response_format"] = "b64_json"
        quality = model.options.get("quality")
        if isinstance(quality, str) and quality:
            fields["quality"] = quality
        if extra:
            fields.update(seed=seeds[0], steps=request.steps)
            if request.negative_prompt:
                fields["negative_prompt"] = request.negative_prompt
        if request.kind == "txt2img":
            response = self.http.request(
                "POST",
                f"{base}/images/generations",
                json=fields,
                headers=headers,
                should_cancel=should_cancel,
                refusal=_is_refusal,
            )
        else:
            if request.init_image is None:
                raise EngineError(f"{request.kind} needs an init image.", code="invalid_input")
            init = fit(request.init_image, request.width, request.height)
            files: dict[str, tuple[str, bytes, str]] = {"image": ("image.png", png_bytes(init), "image/png")}
            if request.kind == "inpaint" and request.mask_image is not None:
                mask = openai_mask(request.mask_image, request.width, request.height)
                files["mask"] = ("mask.png", png_bytes(mask), "image/png")
            response = self.http.request(
                "POST",
                f"{base}/images/edits",
                data={k: str(v) for k, v in fields.items()},
                files=files,
                headers=headers,
                should_cancel=should_cancel,
                refusal=_is_refusal,
            )
        return self._images(self.http.json(response), len(seeds), should_cancel)

    def _images(self, reply: Any, expected: int, should_cancel: CancelCheck) -> list[Image.Image]:
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else "no"
            raise invalid_reply(self.name, f"{got} images where {expected} were asked")
        images = []
        for item in data:
            if not isinstance(item, dict):
                raise invalid_reply(self.name, "an image entry that is not an object")
            if item.get("b64_json"):
                images.append(decode_b64_image(item["b64_json"], self.name))
            elif isinstance(item.get("url"), str) and item["url"].startswith(("http://", "https://")):
                # No key on this request: the URL is a storage link, often on another host.
                downloaded = self.http.request("GET", item["url"], should_cancel=should_cancel)
                images.append(decode_image(downloaded.content, self.name))
            else:
                raise invalid_reply(self.name, "an image entry with neither b64_json nor url")
        return images
