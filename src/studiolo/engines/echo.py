"""The echo engine: a model-free stand-in that draws a deterministic picture per (prompt, seed).

Used by queue tests and benchmarks, and as a smoke-test engine on machines without models. It honours the
whole Engine contract (steps, progress, cancellation, batches, img2img/inpaint) at almost no cost.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import replace
from functools import partial

import numpy as np
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
    preview_size,
)
from studiolo.engines.schedules import SCHEDULES

_ALL_TASKS = Capabilities(
    txt2img=True,
    img2img=True,
    inpaint=True,
    samplers=("echo",),
    # It draws no noise schedule, so every schedule name is accepted and changes nothing (a stand-in for the UI).
    schedulers=tuple(s for s in SCHEDULES if s != "automatic"),
    variation_kinds=("txt2img", "img2img", "inpaint"),
)
# Random detail is drawn on a coarse grid and scaled up, so the cost barely grows with the image size.
_NOISE_GRID = 8
# Previews are drawn this small: they only have to show that the stream carries pictures.
_PREVIEW_SIDE = 64


class EchoEngine:
    """Deterministic, dependency-free image "generator"."""

    name = "echo"

    def __init__(self, step_delay: float = 0.0, capabilities: Capabilities | None = None):
        """``step_delay``: seconds slept per step (lets tests cancel mid-run). ``capabilities``: what to
        advertise (default txt2img, img2img and inpaint), so tests can model a limited engine."""
        self.step_delay = step_delay
        self._capabilities = capabilities or _ALL_TASKS
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    def capabilities(self, model: ModelRef) -> Capabilities:
        return self._capabilities

    def load(self, model: ModelRef) -> None:
        with self._lock:
            self._loaded.add(model.id)

    def is_loaded(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._loaded

    def generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        self._validate(request)
        self.load(request.model)
        if should_cancel():
            raise GenerationCanceled()
        for step in range(1, request.steps + 1):
            if self.step_delay > 0:
                time.sleep(self.step_delay)
            on_step(step, request.steps, preview=partial(self._preview, request, step))
            if should_cancel():
                raise GenerationCanceled()
        sampler = request.sampler if request.sampler not in (None, "default") else "echo"
        variations: list[int | None] = [None] * request.n
        if request.variation_seeds is not None and request.variation_strength > 0:
            variations = list(request.variation_seeds)
        return [
            GeneratedImage(image=self._render(request, seed, vs), seed=seed, sampler=sampler, variation_seed=vs)
            for seed, vs in zip(request.seeds, variations, strict=True)
        ]

    def _validate(self, request: GenerationRequest) -> None:
        caps = self._capabilities
        if not caps.supports(request.kind):
            raise EngineError(f"The echo engine is configured without {request.kind}.", code="unsupported_task")
        if not request.seeds:
            raise EngineError("A generation needs at least one seed.", code="invalid_request")
        if request.steps < 1:
            raise EngineError("steps must be at least 1.", code="invalid_request")
        if request.width <= 0 or request.height <= 0 or request.width * request.height > caps.max_pixels:
            raise EngineError(f"Unsupported size {request.width}x{request.height}.", code="invalid_request")
        if request.kind in ("img2img", "inpaint") and request.init_image is None:
            raise EngineError(f"{request.kind} needs an init image.", code="invalid_request")
        if request.kind == "inpaint" and request.mask_image is None:
            raise EngineError("inpaint needs a mask image (white = repaint).", code="invalid_request")

    def _preview(self, request: GenerationRequest, step: int) -> Image.Image:
        """The first image, small, drawn down to the fraction ``step / steps`` (the rest grey)."""
        width, height = preview_size(request.width, request.height, _PREVIEW_SIDE)
        image = self._render(replace(request, width=width, height=height), request.seeds[0])
        shown = round(height * step / request.steps)
        partial_image = Image.new("RGB", (width, height), (128, 128, 128))
        if shown:
            partial_image.paste(image.crop((0, 0, width, shown)))
        return partial_image

    def _render(self, request: GenerationRequest, seed: int, variation_seed: int | None = None) -> Image.Image:
        w, h = request.width, request.height
        pixels = self._draw(request, seed)
        if variation_seed is not None:
            # The variation seed's picture mixed in by the strength (the echo engine's "noise" is its picture).
            mix = request.variation_strength
            pixels = (1 - mix) * pixels + mix * self._draw(request, variation_seed)
        if request.kind in ("img2img", "inpaint"):
            assert request.init_image is not None
            init = np.asarray(request.init_image.convert("RGB").resize((w, h)), dtype=np.float32)
            pixels = init * (1 - request.strength) + pixels * request.strength
            if request.kind == "inpaint":
                assert request.mask_image is not None
                mask = np.asarray(request.mask_image.convert("L").resize((w, h)), dtype=np.float32)[..., None] / 255
                pixels = init * (1 - mask) + pixels * mask
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    def _draw(self, request: GenerationRequest, seed: int) -> np.ndarray:
        """The picture of (prompt, seed), float RGB (H, W, 3), before any init image is mixed in."""
        w, h = request.width, request.height
        prompt_key = int.from_bytes(hashlib.sha256(request.prompt.encode("utf-8")).digest()[:8], "little")
        rng = np.random.default_rng([seed % 2**64, prompt_key])
        start, end = rng.uniform(0, 255, size=(2, 3))
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xs * np.cos(angle) / max(w, 1) + ys * np.sin(angle) / max(h, 1)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        gradient = start[None, None, :] * (1 - t[..., None]) + end[None, None, :] * t[..., None]
        noise = rng.uniform(-40, 40, size=(_NOISE_GRID, _NOISE_GRID, 3)).astype(np.float32)
        noise_img = Image.fromarray(((noise + 40) * (255 / 80)).astype(np.uint8), "RGB").resize(
            (w, h), Image.Resampling.BILINEAR
        )
        detail = np.asarray(noise_img, dtype=np.float32) * (80 / 255) - 40
        pixels: np.ndarray = gradient + detail
        return pixels
