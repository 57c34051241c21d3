"""The demo engine: Studiolo's own small text-to-image model of a 64x64 toy world, shipped inside the package.

It lets a fresh machine with no network and no GPU make a prompt-following picture in about half a second of
generation on 2 CPU cores (landscapes by time of day with a lighthouse, house, mountains, sea, lake, hills or
trees; coloured shapes; pixel art, watercolor, sketch and neon styles). Being a rectified-flow model it also does
image-to-image and inpainting without any retraining: start on the straight path from the init image to the noise
at t = strength, and for inpainting put the kept region back on that path after every step (model.euler_sample,
inputs.py). The weights are trained by
``training/demo_model/train.py``; ``python -m bench.demo`` measures its speed and its quality by step count.

torch is imported inside the methods only: the server imports this module at start-up and must not pay
for torch there (tests/unit/test_architecture.py::test_torch_is_not_imported_by_the_server_at_start).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

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
    preview_size,
)
from studiolo.engines.demo import inputs as demo_inputs
from studiolo.engines.noise import seeded_noise
from studiolo.engines.threads import resolve_threads, torch_threads

if TYPE_CHECKING:
    from studiolo.engines.demo.model import DemoModel
    from studiolo.engines.demo.text import Tokenizer

log = logging.getLogger(__name__)

DEMO_MODEL_ID = "studiolo-demo"
DEMO_WEIGHTS = Path(__file__).resolve().parent / "weights" / f"{DEMO_MODEL_ID}.safetensors"
DEMO_NOTICE = (
    "Using the built-in demo model (64x64 toy world). For real images: studiolo models pull stabilityai/sd-turbo"
)
TRAIN_COMMAND = "python -m training.demo_model.train --resume --export"
MAX_STEPS = 100
MAX_GUIDANCE = 20.0
# The one sampler of a rectified-flow model: a deterministic Euler walk along the learned velocity. Heun and
# midpoint steps were measured too (bench/demo.py --quality): per network evaluation they came no closer to the
# 100-step picture than Euler, so Euler stays.
SAMPLER = "euler"
# Quality preset -> steps for this model, chosen on the 40 held-out prompts (bench/demo.py --quality, issue 13):
# at 8 steps the pictures match the prompts as often as at 12 (38 of 40 by the retrieval score) and one fewer
# than at 25, with stars, trees and lit windows that 4 steps lose; 25 (the old default) stays as "high".
QUALITY_STEPS: dict[str, int] = {"draft": 4, "standard": 8, "high": 25}
# Classifier-free guidance when a request names none: the scale of the model's blind check and prompt-following
# tests. The generic 7 (for Stable Diffusion) left grain in skies and backgrounds, followed the prompts less
# often at 8 steps (37 of 40 against 38) and broke 4-step pictures (bench/demo.py --quality --guidance 7).
DEFAULT_GUIDANCE = 4.0
# One intra-op thread per job: the network is many small operations, and two threads waiting for each other at
# every one made a 25-step job 3-5x slower than one thread on a 2-core machine busy with other work (16x in the
# issue; bench/demo.py). On an idle machine two threads were 1.5x faster; STUDIOLO_DEMO_THREADS=0 chooses them.
DEFAULT_THREADS = 1
# The blur after enlarging, in model pixels (its standard deviation): Lanczos alone keeps every model pixel
# visible as a tile of a grid at 8x (tests/unit/test_demo_engine.py::test_upscale_shows_no_grid_of_model_pixels).
UPSCALE_SOFTEN = 0.4
_CAPABILITIES = Capabilities(
    txt2img=True,
    img2img=True,
    inpaint=True,
    samplers=(SAMPLER,),
    variation_kinds=("txt2img", "img2img", "inpaint"),
    quality_steps=QUALITY_STEPS,
    default_guidance=DEFAULT_GUIDANCE,
)


def config_path(weights: Path) -> Path:
    """The JSON (vocabulary + architecture) that sits next to a weights file."""
    return weights.with_suffix(".json")


def weights_available(weights: Path = DEMO_WEIGHTS) -> bool:
    """True when the packaged weights and their config exist (the catalog offers the demo model only then)."""
    return weights.is_file() and config_path(weights).is_file()


def fit_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale the square picture to cover ``width`` x ``height`` smoothly, then crop the centre.

    Covering keeps circles round and fills the frame; the model's scenes keep their subject near the middle
    and the horizon in the central band, so a centre crop of a wide or tall frame rarely loses it. Letterbox
    bars would waste the frame and stretching would distort every shape. Enlarging is Lanczos followed by a
    Gaussian blur of ``UPSCALE_SOFTEN`` model pixels: the 64x64 picture has no finer detail to keep, and
    without it each model pixel shows as a tile of a visible grid (8x8 output pixels at 512x512).
    """
    side = max(width, height)
    scaled = image.resize((side, side), Image.Resampling.LANCZOS)
    scale = side / image.width
    if scale > 1:
        scaled = scaled.filter(ImageFilter.GaussianBlur(UPSCALE_SOFTEN * scale))
    left, top = (side - width) // 2, (side - height) // 2
    return scaled.crop((left, top, left + width, top + height))


class DemoEngine:
    """Runs the demo model on the CPU (it is small enough; the GPU would mostly wait for transfers)."""

    name = "demo"

    def __init__(self, weights: Path | None = None, *, threads: int = DEFAULT_THREADS):
        """``weights``: the .safetensors file used when a ModelRef has no path (default: the packaged one).

        ``threads``: torch intra-op threads per job (``STUDIOLO_DEMO_THREADS``; 0: torch's default, one per
        core), set in the worker thread for the job only (engines/threads.py).
        """
        self.weights = weights or DEMO_WEIGHTS
        self.threads = threads
        self._models: dict[str, tuple[DemoModel, Tokenizer]] = {}
        self._lock = threading.Lock()

    def available(self) -> bool:
        """True when this engine's default weights exist (the catalog lists the demo model only then)."""
        return weights_available(self.weights)

    def size_bytes(self) -> int:
        """Bytes on disk of this engine's default weights and their config (0 when they are missing)."""
        files = (self.weights, config_path(self.weights))
        return sum(f.stat().st_size for f in files if f.is_file())

    def capabilities(self, model: ModelRef) -> Capabilities:
        return _CAPABILITIES

    def _weights_for(self, model: ModelRef) -> Path:
        return model.path if model.path is not None else self.weights

    def load(self, model: ModelRef) -> None:
        with self._lock:
            if model.id not in self._models:
                self._models[model.id] = self._load(self._weights_for(model))

    def _load(self, weights: Path) -> tuple[DemoModel, Tokenizer]:
        if not weights_available(weights):
            raise ModelLoadError(
                f"The demo model's weights are missing ({weights} and its .json config). Train and export "
                f"them from a source checkout with `{TRAIN_COMMAND}` (see training/demo_model/README.md), "
                "or install a real model with `studiolo models pull stabilityai/sd-turbo`."
            )
        import torch
        from safetensors.torch import load_file

        from studiolo.engines.demo.model import DemoConfig, DemoModel

        try:
            config = DemoConfig.from_dict(json.loads(config_path(weights).read_text()))
            network = DemoModel(config)
            state = {key: value.to(torch.float32) for key, value in load_file(str(weights)).items()}
            network.load_state_dict(state)
        except (OSError, ValueError, RuntimeError, TypeError) as exc:
            raise ModelLoadError(f"The demo model at {weights} could not be loaded: {exc}") from exc
        network.eval().requires_grad_(False)
        log.info(
            "demo model %s loaded: %d torch thread(s) per job (STUDIOLO_DEMO_THREADS; %s CPUs here), "
            "OMP_WAIT_POLICY=%s",
            weights.name,
            resolve_threads(self.threads),
            os.cpu_count(),
            os.environ.get("OMP_WAIT_POLICY", "unset"),
        )
        return network, config.tokenizer()

    def is_loaded(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._models

    def generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        self._validate(request)
        if should_cancel():
            raise GenerationCanceled()
        self.load(request.model)
        with self._lock:
            network, tokenizer = self._models[request.model.id]
        import torch

        from studiolo.engines.demo.model import euler_sample

        steps = min(max(request.steps, 1), MAX_STEPS)
        guidance = min(max(request.guidance, 0.0), MAX_GUIDANCE)
        ids = torch.tensor([tokenizer.encode(request.prompt, drop_unknown=True)])
        # The negative prompt takes the place of the empty caption in classifier-free guidance, so the
        # sample is pushed away from it (trained with 10% empty captions, the empty one is the default).
        # A negative prompt of unknown words only ("blurry, low quality") thus equals no negative prompt.
        uncond = torch.tensor([tokenizer.encode(request.negative_prompt, drop_unknown=True)])
        size = network.config.image_size
        inputs = _Inputs.of(request, size)
        if inputs is not None:
            # As diffusers counts them: the steps of the part of the walk that is left (at least one).
            steps = max(1, round(steps * request.strength))
        sample_args = _sample_args(inputs, request.strength)
        results: list[GeneratedImage] = []
        variations: list[int | None] = [None] * request.n
        if request.variation_seeds is not None:
            variations = list(request.variation_seeds)
        for index, (seed, variation) in enumerate(zip(request.seeds, variations, strict=True)):
            # One image at a time from its own generator: image k of a batch is bit-identical to the
            # same seed alone (tests/contract: test_image_k_of_a_batch_equals_the_same_seed_alone).
            noise = seeded_noise(
                (1, 3, size, size), seed, variation_seed=variation, variation_strength=request.variation_strength
            )

            def report(step: int, total: int, estimate: Callable[[], Any], image: int = index + 1) -> None:
                on_step(step, total, preview=partial(_preview, estimate, request.width, request.height), image=image)

            with torch.inference_mode(), torch_threads(self.threads):
                pixels = euler_sample(
                    network,
                    noise,
                    ids,
                    uncond,
                    steps,
                    guidance,
                    report,
                    should_cancel,
                    **sample_args,
                )
            if pixels is None:
                raise GenerationCanceled()
            image = fit_to_size(_to_image(pixels), request.width, request.height)
            if inputs is not None:
                image = demo_inputs.finish(
                    image, inputs.init, inputs.model_init, request.strength, inputs.mask, fit_to_size
                )
            used = variation if request.variation_strength > 0 else None
            results.append(GeneratedImage(image=image, seed=seed, sampler=SAMPLER, variation_seed=used))
        return results

    def _validate(self, request: GenerationRequest) -> None:
        if not _CAPABILITIES.supports(request.kind):
            raise EngineError(f"The demo model cannot do {request.kind}.", code="unsupported_task")
        if not request.seeds:
            raise EngineError("A generation needs at least one seed.", code="invalid_request")
        if request.width <= 0 or request.height <= 0 or request.width * request.height > _CAPABILITIES.max_pixels:
            raise EngineError(f"Unsupported size {request.width}x{request.height}.", code="invalid_request")
        if request.kind in ("img2img", "inpaint") and request.init_image is None:
            raise EngineError(f"{request.kind} needs an init image.", code="invalid_request")
        if request.kind == "inpaint" and request.mask_image is None:
            raise EngineError("inpaint needs a mask image (white = repaint).", code="invalid_request")
        if not 0.0 <= request.strength <= 1.0:
            raise EngineError("strength must be in [0, 1].", code="invalid_request")
        if request.scheduler not in (None, "automatic"):
            raise EngineError(
                "The demo model samples on its own evenly spaced steps; its only schedule is automatic.",
                code="invalid_scheduler",
            )
        if request.variation_seeds is not None and len(request.variation_seeds) != request.n:
            raise EngineError("One variation seed per seed is needed.", code="invalid_request")


@dataclass(frozen=True)
class _Inputs:
    """An img2img/inpaint request's init image (and mask) at the request's size and at the model's."""

    init: np.ndarray  # (H, W, 3) 0..255
    model_init: np.ndarray  # (3, size, size) in [-1, 1]
    mask: np.ndarray | None  # (H, W) 0..1, 1 = repaint
    model_mask: np.ndarray | None  # (1, size, size)

    @classmethod
    def of(cls, request: GenerationRequest, size: int) -> _Inputs | None:
        if request.kind == "txt2img" or request.init_image is None:
            return None
        init = demo_inputs.init_at_request_size(request.init_image, request.width, request.height)
        mask = None
        if request.kind == "inpaint" and request.mask_image is not None:
            mask = demo_inputs.mask_at_request_size(request.mask_image, request.width, request.height)
        return cls(
            init=init,
            model_init=demo_inputs.init_to_model(init, size),
            mask=mask,
            model_mask=None if mask is None else demo_inputs.mask_to_model(mask, size),
        )


def _sample_args(inputs: _Inputs | None, strength: float) -> dict[str, Any]:
    """``euler_sample``'s image-to-image arguments (none for txt2img)."""
    if inputs is None:
        return {}
    import torch

    mask = None if inputs.model_mask is None else torch.from_numpy(inputs.model_mask)[None]
    return {"init": torch.from_numpy(inputs.model_init)[None], "mask": mask, "start": strength}


def _to_image(pixels: Any) -> Image.Image:
    """The first picture of a (B, 3, H, W) tensor in [-1, 1]."""
    array = ((pixels[0].permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def _preview(estimate: Callable[[], Any], width: int, height: int) -> Image.Image:
    # The model's own 64x64 estimate, cropped to the request's shape: scaling it up adds bytes, not detail.
    image = _to_image(estimate())
    return fit_to_size(image, *preview_size(width, height, image.width))
