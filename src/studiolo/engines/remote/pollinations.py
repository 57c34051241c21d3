"""Pollinations as an engine: keyless text-to-image over one GET (offered when STUDIOLO_PROVIDER_POLLINATIONS_ENABLED).

``GET {base}/prompt/{url-encoded prompt}?width=&height=&seed=&model=&nologo=true&private=true`` answers the picture's
bytes (``image/*``); anything else (JSON, text, bytes that are no picture) is ``provider_invalid_reply``. A token
(STUDIOLO_PROVIDER_POLLINATIONS_TOKEN, for higher limits and no logo) travels as ``Authorization: Bearer``, never in the
URL. One call per seed: the seed is a query parameter, so image k is what seed k makes alone. The negative prompt is
sent as ``negative_prompt`` only for a model with the ``negative_prompt`` option (the API has carried it for some
models only); otherwise it is dropped. txt2img only. Free: cost 0 unless ``price_per_image`` says otherwise.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

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
from studiolo.engines.remote.base import RemoteEngine, decode_image, invalid_reply
from studiolo.engines.remote.replies import one_call_per_seed
from studiolo.settings import Settings


class PollinationsEngine(RemoteEngine):
    name: ClassVar[str] = "pollinations"

    def base_url(self, settings: Settings) -> str:
        return settings.provider_pollinations_base_url

    def auth_headers(self, settings: Settings) -> dict[str, str]:
        token = settings.provider_pollinations_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def capabilities(self, model: ModelRef) -> Capabilities:
        return Capabilities(txt2img=True, img2img=False, inpaint=False)

    def _generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        if request.kind != "txt2img":
            raise EngineError(f"Pollinations cannot do {request.kind}.", code="unsupported_task")
        # safe="": a "/" or "?" in the prompt must not become part of the path or the query.
        url = f"/prompt/{quote(request.prompt, safe='')}"

        def call(seed: int) -> Image.Image:
            params: dict[str, str | int] = {
                "width": request.width,
                "height": request.height,
                "seed": seed,
                "model": request.model.remote_model or "",
                "nologo": "true",
                "private": "true",  # keep our users' prompts off the public feed
            }
            if request.negative_prompt and request.model.options.get("negative_prompt") is True:
                params["negative_prompt"] = request.negative_prompt
            response = self.http.request("GET", url, params=params, should_cancel=should_cancel)
            kind = response.headers.get("content-type", "")
            if not kind.startswith("image/"):
                raise invalid_reply(self.name, f"a reply of type {kind or 'unknown'} where an image was expected")
            return decode_image(response.content, self.name)

        return one_call_per_seed(request, on_step, should_cancel, self.price(request.model), call)
