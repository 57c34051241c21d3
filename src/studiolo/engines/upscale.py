"""The built-in upscaler: Lanczos resampling and an unsharp mask, behind the Engine contract.

Always available (Pillow only, no model files), so every install can enlarge an image 2x or 4x; a model upscaler
(diffusers' SD x4 / latent x2 upscalers, engines/diffusers_upscale.py) is offered next to it when one is installed.
Lanczos keeps edges without the staircase of bilinear, but softens them by about a pixel at the new size; the unsharp
mask gives that back (radius and strength grow with the factor, since a 4x enlargement is softer than a 2x one).
Tests: tests/unit/test_upscale_engine.py.
"""

from __future__ import annotations

import threading

from PIL import Image, ImageFilter

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

LANCZOS_UPSCALER_ID = "lanczos"
LANCZOS_UPSCALER_NAME = "Lanczos + sharpen"
UPSCALE_FACTORS = (2, 4)
# The largest output this engine makes: 8192 x 8192 (the largest side the generation rules accept); the server's
# STUDIOLO_MAX_PIXELS is checked at submit time and is usually lower.
_MAX_PIXELS = 8192 * 8192


def upscale_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` resized to ``width`` x ``height`` with Lanczos, then sharpened to make up for the softening."""
    factor = max(width / max(image.width, 1), height / max(image.height, 1))
    enlarged = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    if factor <= 1:
        return enlarged
    # Radius ~ the blur Lanczos leaves at this factor; a threshold of 2 leaves flat areas (and their noise) alone.
    return enlarged.filter(ImageFilter.UnsharpMask(radius=0.5 * factor, percent=round(60 + 15 * factor), threshold=2))


def check_upscale_request(request: GenerationRequest, who: str, max_pixels: int) -> Image.Image:
    """The picture an upscale request enlarges, once the request is one an upscaler engine can run (``who``: the
    engine, for the message); EngineError otherwise."""
    if request.kind != "upscale":
        raise EngineError(f"{who} cannot do {request.kind}.", code="unsupported_task")
    if request.init_image is None:
        raise EngineError("An upscale needs the image to enlarge.", code="invalid_request")
    if not request.seeds:
        raise EngineError("A generation needs at least one seed.", code="invalid_request")
    if request.width <= 0 or request.height <= 0 or request.width * request.height > max_pixels:
        raise EngineError(f"Unsupported size {request.width}x{request.height}.", code="invalid_request")
    return request.init_image


class LanczosUpscaleEngine:
    """Upscales ``request.init_image`` to ``request.width`` x ``request.height``; one output per seed (the seed
    changes nothing: the result depends on the image alone)."""

    name = LANCZOS_UPSCALER_ID

    def __init__(self) -> None:
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    def capabilities(self, model: ModelRef) -> Capabilities:
        return Capabilities(txt2img=False, upscale=True, max_pixels=_MAX_PIXELS)

    def load(self, model: ModelRef) -> None:
        with self._lock:
            self._loaded.add(model.id)

    def is_loaded(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._loaded

    def generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        source = check_upscale_request(request, "The Lanczos upscaler", _MAX_PIXELS)
        if should_cancel():
            raise GenerationCanceled()
        image = upscale_image(source, request.width, request.height)
        on_step(1, 1)
        return [GeneratedImage(image=image, seed=seed, sampler=LANCZOS_UPSCALER_ID) for seed in request.seeds]
