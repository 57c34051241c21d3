"""Stability AI's REST API v2beta (Stable Image Core, Ultra, Stable Diffusion 3.x) as an engine (issue 18).

``remote_model`` picks the service: ``core`` → POST /v2beta/stable-image/generate/core, ``ultra`` → .../ultra, any
other name (``sd3.5-large``, ``sd3.5-large-turbo``, ``sd3.5-medium``, ``sd3.5-flash``, ...) → .../sd3 with that
name as its ``model`` field. Requests are multipart/form-data (prompt, negative_prompt, aspect_ratio, seed,
output_format=png); the key goes in ``Authorization: Bearer``.

- **Size**: Stability takes an aspect ratio from a fixed list, not a size: the engine sends the ratio nearest to
  the requested one and fits the image it gets (about one megapixel) to the requested size, cropping the centre
  when the ratios differ and resizing (Lanczos). Images come back at the size asked for, as every engine's do.
- **img2img**: ``ultra`` and the SD3 models (image + strength; SD3 with mode=image-to-image); ``core`` has none.
  **inpaint**: POST /v2beta/stable-image/edit/inpaint (image + mask, white = repaint) for any model row.
- **One call per image**: the API makes one image a call; a job of n images makes n calls, one per seed.
- **Replies**: ``Accept: image/*`` (the default) gets the PNG with ``finish-reason`` and ``seed`` headers; the
  ``accept=json`` option asks for JSON ``{image: base64, finish_reason, seed}``. A ``CONTENT_FILTERED`` finish
  reason, or a 403 whose ``name`` is ``content_moderation``, fails the job with ``content_rejected``.
- **Cost**: Stability bills credits, $0.01 each; the per-image prices below are the credits its pricing page
  listed in 2025 (core 3, ultra 8, sd3.5-large 6.5, ...). They change: the model row's ``price_per_image`` option
  overrides them. A name not in the table is counted at ultra's price, the dearest, so spend is never
  under-reported.
- Other model-specific fields go through ``input.NAME`` options (e.g. ``input.style_preset=anime``).
"""

from __future__ import annotations

import math
from typing import Any

import httpx
from PIL import Image, ImageOps

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
from studiolo.engines.remote.base import (
    RemoteEngine,
    decode_b64_image,
    decode_image,
    invalid_reply,
    png_bytes,
    provider_error,
)
from studiolo.engines.remote.polling import tailor
from studiolo.settings import Settings

ASPECT_RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
CREDIT_USD = 0.01
# Credits per image (Stability's pricing page, 2025); overridable per model row with ``price_per_image``.
CREDITS: dict[str, float] = {
    "core": 3,
    "ultra": 8,
    "sd3.5-large": 6.5,
    "sd3.5-large-turbo": 4,
    "sd3.5-medium": 3.5,
    "sd3.5-flash": 2.5,
    "inpaint": 3,
}
MAX_SEED = 4294967294
FILTERED = "CONTENT_FILTERED"


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The ratio of Stability's list closest to ``width``:``height`` (compared on a log scale: 2:1 and 1:2 are
    as far from 1:1)."""
    wanted = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - wanted)

    return min(ASPECT_RATIOS, key=distance)


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` at exactly ``width`` x ``height``: the centre cropped to that ratio, then resized."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)


def _refused(response: httpx.Response) -> bool:
    """Stability's moderation answer: ``{"name": "content_moderation", "errors": [...]}`` (403, sometimes 400)."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("name") == "content_moderation"


class StabilityEngine(RemoteEngine):
    """Stability AI's hosted Stable Image and SD3 models (see the module doc)."""

    name = "stability"
    default_price = CREDITS["ultra"] * CREDIT_USD

    def base_url(self, settings: Settings) -> str:
        return settings.provider_stability_base_url

    def auth_headers(self, settings: Settings) -> dict[str, str]:
        return {"Authorization": f"Bearer {settings.provider_stability_api_key}"}

    def capabilities(self, model: ModelRef) -> Capabilities:
        return Capabilities(txt2img=True, img2img=model.remote_model != "core", inpaint=True, max_pixels=1536 * 1536)

    def price_for(self, model: ModelRef, kind: str) -> float:
        """One image's price: the row's ``price_per_image``, else the credits table (see the module doc)."""
        if isinstance(model.options.get("price_per_image"), int | float):
            return self.price(model)
        credits = CREDITS.get("inpaint" if kind == "inpaint" else model.remote_model or "")
        return round(credits * CREDIT_USD, 6) if credits is not None else self.default_price

    def _generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        json_reply = str(request.model.options.get("accept", "")).lower() == "json"
        accept = "application/json" if json_reply else "image/*"
        price = self.price_for(request.model, request.kind)
        images = []
        for k, seed in enumerate(request.seeds):
            if should_cancel():
                raise GenerationCanceled()
            path, fields, files = self._call(request, seed)
            response = self.http.request(
                "POST",
                path,
                data=fields,
                files=files,
                headers={"Accept": accept},
                should_cancel=should_cancel,
                refusal=_refused,
            )
            image = fit(self._read(response), request.width, request.height)
            images.append(GeneratedImage(image=image, seed=seed, cost=price))
            on_step(k + 1, request.n, preview=image, image=k + 1)
        return images

    def _call(self, request: GenerationRequest, seed: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The path, form fields and files of one image's call."""
        remote = request.model.remote_model or ""
        fields: dict[str, object] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "seed": seed % (MAX_SEED + 1),
            "output_format": "png",
        }
        # httpx sends multipart only with a file part; with none, a placeholder keeps the body multipart (the
        # API refuses url-encoded forms), as Stability's own examples do.
        files: dict[str, Any] = {"none": ("", b"")}
        if request.kind == "inpaint":
            if request.init_image is None or request.mask_image is None:
                raise EngineError("inpaint needs an image and a mask (white = repaint).", code="invalid_request")
            files = {
                "image": ("image.png", png_bytes(request.init_image), "image/png"),
                "mask": ("mask.png", png_bytes(request.mask_image.convert("L")), "image/png"),
            }
            path = "/v2beta/stable-image/edit/inpaint"
        else:
            service = remote if remote in ("core", "ultra") else "sd3"
            path = f"/v2beta/stable-image/generate/{service}"
            if service == "sd3":
                fields["model"] = remote
            if request.kind == "img2img":
                if service == "core" or request.init_image is None:
                    raise provider_error("provider_rejected", "Stable Image Core does not take an input image.")
                files = {"image": ("image.png", png_bytes(request.init_image), "image/png")}
                fields["strength"] = request.strength
                if service == "sd3":
                    fields["mode"] = "image-to-image"
            else:
                fields["aspect_ratio"] = nearest_aspect_ratio(request.width, request.height)
        form = tailor(fields, request.model.options)
        return path, {k: str(v) for k, v in form.items()}, files

    def _read(self, response: httpx.Response) -> Image.Image:
        """The image of a reply: raw bytes (Accept: image/*) or JSON with base64; a filtered one is a refusal."""
        ctype = response.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            body = self.http.json(response)
            if not isinstance(body, dict):
                raise invalid_reply(self.name, "a JSON reply that is not an object")
            if body.get("finish_reason") == FILTERED:
                raise provider_error("content_rejected", "stability filtered the image (CONTENT_FILTERED).")
            return decode_b64_image(body.get("image"), self.name)
        if not ctype.startswith("image/"):
            raise invalid_reply(self.name, f"a reply of type '{ctype or 'none'}' instead of an image")
        if response.headers.get("finish-reason") == FILTERED:
            raise provider_error("content_rejected", "stability filtered the image (CONTENT_FILTERED).")
        return decode_image(response.content, self.name)
