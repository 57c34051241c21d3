"""Image-to-video: a still image in motion, for the film studio's scenes (issue 16).

``SVDImageToVideo`` runs diffusers' ``StableVideoDiffusionPipeline`` on an installed Stable Video Diffusion model
(``studiolo models import <folder>`` stores it with arch "svd": model_files.MOTION_PIPELINES). SVD makes a fixed
number of frames (the UNet's ``num_frames``, 14 or 25) at about its native size (1024x576 for the real models);
a film wants ``count`` frames at its own fps and size. So the image is cropped to the film frame's aspect at the
model's pixel area, the model's frames are generated once, and they are time-stretched to ``count`` frames by
linear cross-blending neighbouring frames, each frame cropped and resized to the film's size (never stretched).

Where no such model is installed the film pipeline uses Ken Burns (render.py); ``motion_models`` lists the ones
that are. torch and diffusers are imported lazily, as in diffusers_engine.py.
Tests: tests/unit/test_image_to_video.py and tests/integration/test_motion_models.py (a tiny random SVD pipeline,
tests/tiny_svd.py).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from PIL import Image, ImageOps

from studiolo.engines.base import EngineError, GenerationCanceled, ModelLoadError
from studiolo.engines.model_cache import evict_least_recent, free_device_memory
from studiolo.engines.model_files import MOTION_ARCHS, MOTION_PIPELINES, ModelFileError, inspect_model_path
from studiolo.engines.threads import torch_threads

if TYPE_CHECKING:
    from studiolo.domain.generation.catalog import ModelCatalog

# The fps SVD's motion is conditioned on is clamped to what it was trained around (its default is 7).
MIN_CONDITIONING_FPS = 3
MAX_CONDITIONING_FPS = 30


@dataclass(frozen=True)
class MotionModel:
    """An installed image-to-video model (arch "svd")."""

    id: str
    name: str
    path: Path


@runtime_checkable
class ImageToVideo(Protocol):
    name: str

    def frames(
        self,
        model: MotionModel,
        image: Image.Image,
        *,
        width: int,
        height: int,
        count: int,
        fps: int,
        seed: int,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Image.Image]:
        """Exactly ``count`` RGB frames of ``width`` x ``height`` showing ``image`` in motion, played at ``fps``;
        the same for the same arguments (deterministic per seed). Raises GenerationCanceled once ``should_stop()``
        is true (checked between denoising steps), EngineError on a failure."""
        ...


def motion_models(catalog: ModelCatalog) -> list[MotionModel]:
    """The installed image-to-video models (arch "svd") whose files are on this machine, by id."""
    found = []
    for info in catalog.models():
        if info.arch in MOTION_ARCHS and info.path is not None and Path(info.path).exists():
            found.append(MotionModel(id=info.id, name=info.id, path=Path(info.path)))
    return sorted(found, key=lambda m: m.id)


# --- frame geometry and timing (pure) ---------------------------------------------------------------------------


def fit_frame(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` as RGB, cropped (centred) to the aspect of ``width`` x ``height`` and resized to it (never
    stretched)."""
    rgb = image.convert("RGB")
    if rgb.size == (width, height):
        return rgb
    return ImageOps.fit(rgb, (width, height), Image.Resampling.LANCZOS)


def model_size(native: int, multiple: int, width: int, height: int) -> tuple[int, int]:
    """The size to generate at: about ``native`` x ``native`` pixels of area with the aspect of ``width`` x
    ``height``, each side a positive multiple of ``multiple`` (what the VAE and the UNet's downsampling need)."""
    aspect = width / height
    area = native * native
    w = math.sqrt(area * aspect)
    h = area / w
    return max(multiple, round(w / multiple) * multiple), max(multiple, round(h / multiple) * multiple)


def conditioning_fps(generated: int, count: int, fps: int) -> int:
    """The fps the generated frames are actually shown at once stretched over ``count`` frames at ``fps`` (SVD's
    motion is conditioned on it: a slower rate asks for more motion between frames), clamped to SVD's range."""
    seconds = count / fps
    return min(MAX_CONDITIONING_FPS, max(MIN_CONDITIONING_FPS, round(generated / seconds)))


def time_stretch(frames: Sequence[Image.Image], count: int) -> list[Image.Image]:
    """Exactly ``count`` frames spanning ``frames`` from the first to the last: output frame i sits at position
    i * (n - 1) / (count - 1) among the n inputs and is the linear cross-blend of its two neighbours (frames of one
    size and mode)."""
    if not frames:
        raise ValueError("time_stretch needs at least one frame")
    if count < 1:
        raise ValueError("count must be at least 1")
    n = len(frames)
    if n == 1 or count == 1:
        return [frames[0].copy() for _ in range(count)]
    out: list[Image.Image] = []
    for i in range(count):
        position = i * (n - 1) / (count - 1)
        left = min(math.floor(position), n - 2)
        weight = position - left
        if weight <= 1e-9:
            out.append(frames[left].copy())
        elif weight >= 1 - 1e-9:
            out.append(frames[left + 1].copy())
        else:
            out.append(Image.blend(frames[left], frames[left + 1], weight))
    return out


# --- Stable Video Diffusion --------------------------------------------------------------------------------------


@dataclass
class _Loaded:
    path: Path
    pipe: Any
    size_bytes: int
    # Schedulers hold per-run state: one run per loaded model at a time.
    run_lock: threading.Lock = field(default_factory=threading.Lock)
    in_use: int = 0


class SVDImageToVideo:
    """Stable Video Diffusion through diffusers' ``StableVideoDiffusionPipeline``; loaded pipelines are cached per
    model id (least recently used first out past ``memory_budget_bytes``), safe to call from several threads."""

    name = "svd"

    def __init__(
        self,
        *,
        device: str = "auto",
        steps: int = 25,
        memory_budget_bytes: int = 12 * 2**30,
        decode_chunk_size: int = 8,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        threads: int = 0,
    ) -> None:
        """``device``: "auto" (cuda > mps > cpu) or a torch device string. ``steps``: denoising steps per clip.
        ``decode_chunk_size``: frames the VAE decodes at once (less: less memory). ``motion_bucket_id``: SVD's
        amount-of-motion conditioning (127 its default). ``threads``: torch CPU threads while running (0: torch's
        process default; engines/threads.py)."""
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self._device_pref = device
        self._device: str | None = None
        self.steps = steps
        self.memory_budget_bytes = memory_budget_bytes
        self.decode_chunk_size = max(1, decode_chunk_size)
        self.motion_bucket_id = motion_bucket_id
        self.noise_aug_strength = noise_aug_strength
        self.threads = threads
        self._cache: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.Lock()  # guards _cache
        self._load_lock = threading.Lock()  # one load at a time: two would need both models' memory at once

    @property
    def device(self) -> str:
        if self._device is None:
            from studiolo.engines.diffusers_engine import _resolve_device

            self._device = _resolve_device(self._device_pref)
        return self._device

    def is_loaded(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._cache

    def unload(self, model_id: str) -> bool:
        with self._lock:
            entry = self._cache.pop(model_id, None)
        if entry is None:
            return False
        del entry
        self._free_memory()
        return True

    def frames(
        self,
        model: MotionModel,
        image: Image.Image,
        *,
        width: int,
        height: int,
        count: int,
        fps: int,
        seed: int,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Image.Image]:
        if count < 1 or width < 1 or height < 1 or fps < 1:
            raise EngineError(
                f"Image-to-video needs at least one frame of a positive size at a positive fps (got {count} frames "
                f"of {width}x{height} at {fps} fps).",
                code="invalid_request",
            )
        stop = should_stop or (lambda: False)
        if stop():
            raise GenerationCanceled()
        entry = self._acquire(model)
        try:
            with entry.run_lock, torch_threads(self.threads):
                generated = self._generate(entry.pipe, image, width, height, count, fps, seed, stop)
        except (GenerationCanceled, EngineError):
            raise
        except Exception as exc:
            from studiolo.engines.diffusers_checks import is_oom

            if is_oom(exc):
                self._free_memory()
                raise EngineError(
                    f"Not enough memory on {self.device} to animate with '{model.id}'. Lower the decode chunk size "
                    "or use Ken Burns motion.",
                    code="out_of_memory",
                    retryable=True,
                ) from exc
            raise EngineError(
                f"Image-to-video with '{model.id}' failed: {type(exc).__name__}: {exc}",
                code="motion_failed",
                retryable=True,
            ) from exc
        finally:
            self._release(entry)
        # Resize the model's frames first (n of them), then blend at the film's size.
        return time_stretch([fit_frame(f, width, height) for f in generated], count)

    def _generate(
        self,
        pipe: Any,
        image: Image.Image,
        width: int,
        height: int,
        count: int,
        fps: int,
        seed: int,
        stop: Callable[[], bool],
    ) -> list[Image.Image]:
        import torch

        unet_config = pipe.unet.config
        num_frames = int(unet_config.num_frames)
        # The pipeline takes sides divisible by 8; the UNet halves the latents once per block after the first.
        multiple = math.lcm(8, int(pipe.vae_scale_factor) * 2 ** (len(unet_config.block_out_channels) - 1))
        native = int(unet_config.sample_size) * int(pipe.vae_scale_factor)
        w, h = model_size(native, multiple, width, height)
        source = fit_frame(image, w, h)

        def on_step_end(_pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if stop():
                raise GenerationCanceled()
            return tensors

        generator = torch.Generator(device="cpu").manual_seed(seed % 2**64)
        result = pipe(
            source,
            height=h,
            width=w,
            num_frames=num_frames,
            num_inference_steps=self.steps,
            fps=conditioning_fps(num_frames, count, fps),
            motion_bucket_id=self.motion_bucket_id,
            noise_aug_strength=self.noise_aug_strength,
            decode_chunk_size=min(self.decode_chunk_size, num_frames),
            generator=generator,
            output_type="pil",
            callback_on_step_end=on_step_end,
        )
        frames = list(result.frames[0])
        if not frames:
            raise EngineError("The image-to-video model made no frames.", code="motion_failed", retryable=False)
        return frames

    # -- the cache -------------------------------------------------------------------------------------------------

    def _acquire(self, model: MotionModel) -> _Loaded:
        """The loaded pipeline of ``model`` (loading it if needed), marked in use until ``_release``."""
        with self._lock:
            entry = self._cache.get(model.id)
            if entry is not None and entry.path == model.path:
                self._cache.move_to_end(model.id)
                entry.in_use += 1
                return entry
        with self._load_lock:
            with self._lock:
                entry = self._cache.get(model.id)
                if entry is not None and entry.path == model.path:
                    self._cache.move_to_end(model.id)
                    entry.in_use += 1
                    return entry
            loaded = self._load(model)
            with self._lock:
                loaded.in_use += 1
                self._cache[model.id] = loaded  # replaces an entry of the same id from other files
                evicted = self._evict_locked(keep=model.id)
        if evicted:
            del evicted
            self._free_memory()
        return loaded

    def _release(self, entry: _Loaded) -> None:
        with self._lock:
            entry.in_use -= 1

    def _evict_locked(self, keep: str) -> list[_Loaded]:
        return evict_least_recent(self._cache, self.memory_budget_bytes, keep=keep)

    def _free_memory(self) -> None:
        free_device_memory(self._device)

    def _load(self, model: MotionModel) -> _Loaded:
        from studiolo.engines.diffusers_checks import is_oom as _is_oom
        from studiolo.engines.diffusers_engine import (
            _dtype_kwarg,
            _only_fp16_variant_weights,
            _pipeline_bytes,
        )
        from studiolo.engines.hf_libraries import quiet_hf_libraries

        path = Path(model.path)
        try:
            inspection = inspect_model_path(path)
        except ModelFileError as exc:
            raise ModelLoadError(f"Image-to-video model '{model.id}': {exc}") from exc
        if inspection.pipeline_class not in MOTION_PIPELINES:
            raise ModelLoadError(
                f"Model '{model.id}' at {path} is a {inspection.pipeline_class or 'single-file'} model, not an "
                "image-to-video model (Stable Video Diffusion)."
            )
        try:
            import diffusers
            import torch

            quiet_hf_libraries()
            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
            kwargs: dict[str, Any] = {**_dtype_kwarg(dtype), "local_files_only": True}
            if _only_fp16_variant_weights(path):
                kwargs["variant"] = "fp16"
            pipe = diffusers.StableVideoDiffusionPipeline.from_pretrained(str(path), **kwargs)
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
        except Exception as exc:
            if _is_oom(exc):
                self._free_memory()
                raise EngineError(
                    f"Not enough memory on {self.device} to load image-to-video model '{model.id}'.",
                    code="out_of_memory",
                    retryable=True,
                ) from exc
            raise ModelLoadError(
                f"Could not load image-to-video model '{model.id}' from {path}: {type(exc).__name__}: {exc}. The "
                "files may be damaged or incomplete; import the folder again with `studiolo models import PATH`."
            ) from exc
        return _Loaded(path=path, pipe=pipe, size_bytes=_pipeline_bytes(pipe))
