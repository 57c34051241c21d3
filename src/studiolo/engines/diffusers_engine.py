"""The local engine: Stable Diffusion family models run with 🤗 diffusers.

This is the only module that touches diffusers. torch and diffusers are imported lazily (inside methods) so
that importing it, and running a server with no model loaded, stays cheap.

One loaded set of weights serves txt2img, img2img and inpainting: the pipeline loaded from disk is turned
into the three task pipelines with ``AutoPipelineFor*.from_pipe``, which share the modules instead of copying
them. Loaded models live in an LRU cache bounded by a byte budget.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from studiolo.engines.accel.cache import AccelCache
from studiolo.engines.accel.plan import CpuAccel
from studiolo.engines.accel.setup import GpuCompile, accelerate, resolve_threads
from studiolo.engines.base import (
    CancelCheck,
    Capabilities,
    EngineError,
    GeneratedImage,
    GenerationCanceled,
    GenerationRequest,
    JobKind,
    ModelLoadError,
    ModelRef,
    StepCallback,
)
from studiolo.engines.controlnet import control_pipeline
from studiolo.engines.diffusers_checks import is_oom as _is_oom
from studiolo.engines.diffusers_checks import validate_request as _validate_request
from studiolo.engines.diffusers_entry import LoadedPipeline as _Loaded
from studiolo.engines.diffusers_entry import module_bytes
from studiolo.engines.diffusers_sampling import (
    diffusers_capabilities,
    keep_unmasked,
    make_scheduler,
    variation_latents,
)
from studiolo.engines.diffusers_upscale import UPSCALE_PIPELINES, is_upscaler, upscale_kwargs, upscaler_capabilities
from studiolo.engines.hf_libraries import quiet_hf_libraries
from studiolo.engines.hires import run_hires
from studiolo.engines.ip_adapter import apply_reference
from studiolo.engines.latent_preview import is_sdxl, latent_preview
from studiolo.engines.lora import apply_embeddings, apply_loras
from studiolo.engines.model_cache import evict_least_recent, free_device_memory
from studiolo.engines.model_files import (
    CONFIGS_DIR,
    IMPORT_HINT,
    MOTION_PIPELINES,
    ModelFileError,
    clip_vocab_and_merges,
    inspect_model_path,
    pipeline_tasks,
)
from studiolo.engines.threads import torch_threads

if TYPE_CHECKING:
    import torch

SINGLE_FILE_ARCHS = ("sd15", "sd21", "sdxl")
JOB_KINDS: tuple[JobKind, ...] = ("txt2img", "img2img", "inpaint")


def clip_tokenizer_from_package(settings: dict[str, Any] | None = None) -> Any:
    """A CLIPTokenizer identical to the one SD 1.x/2.x/SDXL ship with, built offline.

    ``settings`` are tokenizer_config.json values (pad_token, model_max_length...).
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    options: dict[str, Any] = {"model_max_length": 77}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length"):
        if settings and key in settings:
            options[key] = settings[key]
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), **options)


def _load_tokenizer(folder: Path) -> Any:
    """The tokenizer for one single-file component: real files if the config folder has them, else packaged."""
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    settings_file = folder / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else None
    return clip_tokenizer_from_package(settings)


# --- the engine ---------------------------------------------------------------------------------------------


class DiffusersEngine:
    """Runs diffusers pipelines from diffusers folders (local or pulled from a hub) or single .safetensors files."""

    name = "diffusers"

    def __init__(
        self,
        device: str = "auto",
        memory_budget_bytes: int = 8 * 2**30,
        *,
        config_root: Path | None = None,
        cpu_accel: CpuAccel = "off",
        accel_cache_dir: Path | None = None,
        threads: int = 0,
        gpu_compile: GpuCompile = "off",
    ):
        """``device``: "auto" (cuda > mps > cpu) or a torch device string. ``memory_budget_bytes`` bounds the
        parameter bytes of cached pipelines. ``config_root`` holds the ``<arch>/`` config folders used for
        single-file checkpoints (default: the ones shipped in the package). ``cpu_accel`` picks the CPU path
        (engines/accel; "off": fp32 as loaded), caching conversions under ``accel_cache_dir``; ``threads`` is
        the torch/OpenVINO thread count per job (0: one per physical core); ``gpu_compile`` compiles UNets on
        CUDA."""
        self.cpu_accel: CpuAccel = cpu_accel
        self.accel_cache = AccelCache(accel_cache_dir or _default_cache_root())
        self.threads = resolve_threads(threads)
        self.gpu_compile: GpuCompile = gpu_compile
        self._device_pref = device
        self._device: str | None = None
        self.memory_budget_bytes = memory_budget_bytes
        self.config_root = Path(config_root) if config_root is not None else CONFIGS_DIR
        self._cache: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.Lock()  # guards _cache
        self._load_lock = threading.Lock()  # one load at a time: two would need both models' memory at once

    # -- contract ---------------------------------------------------------------------------------------------

    @property
    def device(self) -> str:
        """The torch device in use (resolving "auto" imports torch)."""
        if self._device is None:
            self._device = _resolve_device(self._device_pref)
        return self._device

    def capabilities(self, model: ModelRef) -> Capabilities:
        with self._lock:
            entry = self._cache.get(model.id)
            if entry is not None:
                return entry.capabilities
        # Not loaded: judge by the pipeline class named in the files (no torch import).
        pipeline_class = None
        # An unreadable model reports the basics; load() will say what is wrong.
        with contextlib.suppress(ModelFileError):
            if model.path is not None:
                pipeline_class = inspect_model_path(model.path).pipeline_class
        if pipeline_class in UPSCALE_PIPELINES:
            return upscaler_capabilities()
        if pipeline_class in MOTION_PIPELINES:  # animates images for films (image_to_video.py), draws none
            return Capabilities(txt2img=False, img2img=False, inpaint=False)
        return diffusers_capabilities(*pipeline_tasks(pipeline_class))

    def load(self, model: ModelRef) -> None:
        entry = self._acquire(model)
        self._release(entry)

    def is_loaded(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._cache

    def unload(self, model_id: str) -> bool:
        """Drop a model from the cache (it stays alive until a running generation finishes)."""
        with self._lock:
            entry = self._cache.pop(model_id, None)
        if entry is None:
            return False
        del entry
        self._free_memory()
        return True

    def loaded_bytes(self) -> int:
        """Parameter bytes of all cached pipelines."""
        with self._lock:
            return sum(e.size_bytes for e in self._cache.values())

    def generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        import numpy as np

        results, sampler = self._generate(request, on_step, should_cancel)
        # The same rounding diffusers uses for its own PIL output.
        pil = [Image.fromarray((array * 255).round().astype(np.uint8)).convert("RGB") for _seed, array in results]
        return [
            GeneratedImage(image=img, seed=seed, sampler=sampler) for img, (seed, _a) in zip(pil, results, strict=True)
        ]

    def generate_arrays(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[tuple[int, Any]]:
        """Like ``generate`` but returns (seed, float32 HxWx3 array in [0, 1]) pairs, before 8-bit rounding."""
        results, _sampler = self._generate(request, on_step, should_cancel)
        return results

    # -- generation -------------------------------------------------------------------------------------------

    def _generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> tuple[list[tuple[int, Any]], str]:
        _validate_request(request)
        if should_cancel():  # before a possibly slow model load
            raise GenerationCanceled()
        entry = self._acquire(request.model)
        try:
            if not entry.capabilities.supports(request.kind):
                raise EngineError(
                    f"Model '{request.model.id}' cannot do {request.kind} "
                    f"(it supports: {', '.join(k for k in JOB_KINDS if entry.capabilities.supports(k))}).",
                    code="unsupported_task",
                )
            if request.width * request.height > entry.capabilities.max_pixels:
                raise EngineError(
                    f"{request.width}x{request.height} is larger than this model allows "
                    f"({entry.capabilities.max_pixels} pixels).",
                    code="invalid_request",
                )
            # The engine's thread count, set for this job: a demo job may have changed it (engines/threads.py);
            # the model's accelerated modules, when this job can use them (engines/accel).
            with entry.run_lock, torch_threads(self.threads), entry.accel.active(entry.base, request):
                return self._run(entry, request, on_step, should_cancel)
        finally:
            self._release(entry)

    def _run(
        self,
        entry: _Loaded,
        request: GenerationRequest,
        on_step: StepCallback,
        should_cancel: CancelCheck,
        *,
        init_images: list[Any] | None = None,
        output_type: str = "np",
    ) -> tuple[list[tuple[int, Any]], str]:
        """``init_images`` (img2img): each image's own start (pictures at the size, or latents) instead of
        ``request.init_image`` for all; ``output_type`` "latent" returns latents. Both for hires fix (hires.py)."""
        import torch

        if request.hires is not None:  # two sampling calls: small, then enlarged and refined (engines/hires.py)
            return run_hires(self, entry, request, on_step, should_cancel)
        pipe = entry.pipes[request.kind]
        # Adapters of this job onto the shared modules (a job without them gets the model as loaded: lora.py).
        apply_loras(entry, request)
        apply_embeddings(entry, request)
        scheduler, sampler_name = make_scheduler(entry.base.scheduler, request.sampler, request.scheduler)
        # CPU generators on MPS: MPS generators are not reproducible across runs.
        gen_device = "cpu" if self.device.startswith("mps") else self.device
        generators = [torch.Generator(gen_device).manual_seed(seed) for seed in request.seeds]

        def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            total = int(getattr(pipeline, "num_timesteps", 0) or request.steps)
            latents = callback_kwargs["latents"]  # made into a picture only if the caller asks
            on_step(step + 1, total, preview=lambda: latent_preview(latents, sdxl=is_sdxl(pipeline)))
            if should_cancel():
                raise GenerationCanceled()
            return callback_kwargs

        n = request.n
        # Everything is passed as per-image lists (not num_images_per_prompt): some pipelines (inpainting)
        # encode a single init image with the first generator only and repeat it, which would make image k of
        # a batch differ from the same seed alone.
        kwargs: dict[str, Any] = {
            "prompt": [request.prompt] * n,
            "negative_prompt": [request.negative_prompt] * n if request.negative_prompt else None,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "num_images_per_prompt": 1,
            "generator": generators,
            "output_type": output_type,
            "callback_on_step_end": on_step_end,
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        size = (request.width, request.height)
        if request.kind in ("txt2img", "inpaint"):
            kwargs["width"], kwargs["height"] = size
        if request.kind in ("img2img", "inpaint"):
            if init_images is None:
                assert request.init_image is not None  # checked by _validate_request
                init_images = [request.init_image.convert("RGB").resize(size, Image.Resampling.LANCZOS)] * n
            kwargs["image"] = init_images
            kwargs["strength"] = request.strength
        if request.kind == "inpaint":
            assert request.mask_image is not None
            mask = request.mask_image.convert("L").resize(size, Image.Resampling.NEAREST)
            kwargs["mask_image"] = [mask] * n
        kwargs = upscale_kwargs(pipe, request, kwargs, on_step, should_cancel) if request.kind == "upscale" else kwargs
        # ControlNet units swap in the task's ControlNet pipeline (same modules); a reference image adds its embeds.
        pipe = control_pipeline(entry, request, pipe, kwargs)
        apply_reference(entry, pipe, request, kwargs)
        pipe.scheduler = scheduler

        if request.variation_seeds is not None and request.variation_strength > 0:
            kwargs["latents"] = variation_latents(pipe, request, gen_device)
        if should_cancel():
            raise GenerationCanceled()
        try:
            with torch.inference_mode():
                result = pipe(**kwargs)
        except GenerationCanceled:
            raise
        except Exception as exc:
            if _is_oom(exc):
                self._free_memory()
                raise EngineError(
                    f"Out of memory generating {n} image(s) at {request.width}x{request.height} on "
                    f"{self.device}. Try fewer images, a smaller size, or unload other models.",
                    code="out_of_memory",
                    retryable=True,
                ) from exc
            if isinstance(exc, ValueError | TypeError):
                raise EngineError(f"Invalid generation request: {exc}", code="invalid_request") from exc
            raise EngineError(f"Generation failed: {type(exc).__name__}: {exc}", code="generation_failed") from exc
        arrays = list(result.images)
        if request.kind == "inpaint":
            arrays = keep_unmasked(arrays, kwargs["image"][0], kwargs["mask_image"][0])
        return list(zip(request.seeds, arrays, strict=True)), sampler_name

    # -- cache ------------------------------------------------------------------------------------------------

    def _acquire(self, model: ModelRef) -> _Loaded:
        """Return the loaded model (loading it if needed), marked in use until ``_release``."""
        with self._lock:
            entry = self._cache.get(model.id)
            if entry is not None:
                self._cache.move_to_end(model.id)
                entry.in_use += 1
                return entry
        with self._load_lock:
            with self._lock:
                entry = self._cache.get(model.id)
                if entry is not None:
                    self._cache.move_to_end(model.id)
                    entry.in_use += 1
                    return entry
            try:
                entry = self._load_entry(model)
            except EngineError as exc:
                if exc.code != "out_of_memory":
                    raise
                # Make room by dropping every idle model, then try once more.
                with self._lock:
                    dropped = self._evict_locked(keep=model.id, budget=0)
                if not dropped:
                    raise
                del dropped
                self._free_memory()
                entry = self._load_entry(model)
            with self._lock:
                entry.in_use += 1
                self._cache[model.id] = entry
                evicted = self._evict_locked(keep=model.id)
        if evicted:
            del evicted
            self._free_memory()
        return entry

    def _release(self, entry: _Loaded) -> None:
        with self._lock:
            entry.in_use -= 1

    def _evict_locked(self, keep: str, budget: int | None = None) -> list[_Loaded]:
        """Drop least recently used idle models until the cache fits ``budget``; returns what was dropped."""
        return evict_least_recent(self._cache, self.memory_budget_bytes if budget is None else budget, keep=keep)

    def _free_memory(self) -> None:
        free_device_memory(self._device)

    # -- loading ----------------------------------------------------------------------------------------------

    def _load_entry(self, model: ModelRef) -> _Loaded:
        try:
            base, accel = accelerate(
                self._load_pipeline(model),
                model,
                device=self.device,
                cpu_accel=self.cpu_accel,
                cache=self.accel_cache,
                threads=self.threads,
                gpu_compile=self.gpu_compile,
                reload_fp32=lambda: self._load_pipeline(model),
            )
        except (EngineError, GenerationCanceled):
            raise
        except Exception as exc:
            if _is_oom(exc):
                self._free_memory()
                raise EngineError(
                    f"Not enough memory on {self.device} to load model '{model.id}'. Unload other models or "
                    "lower the memory budget so fewer stay cached.",
                    code="out_of_memory",
                    retryable=True,
                ) from exc
            raise ModelLoadError(
                f"Could not load model '{model.id}' from {model.path}: {type(exc).__name__}: {exc}. The files "
                f"may be damaged or not a supported diffusers model; re-import it with {IMPORT_HINT}."
            ) from exc
        size = _pipeline_bytes(base)
        if is_upscaler(base):  # enlarges images and draws none (diffusers_upscale.py)
            return _Loaded(base, {"upscale": base}, upscaler_capabilities(), size, self.device, accel=accel)
        if type(base).__name__ in MOTION_PIPELINES:  # image-to-video: run by image_to_video.py, draws none here
            no_tasks = Capabilities(txt2img=False, img2img=False, inpaint=False)
            return _Loaded(base, {}, no_tasks, size, self.device, accel=accel)
        pipes: dict[JobKind, Any] = {}
        unet = getattr(base, "unet", None)
        inpaint_only = int(getattr(getattr(unet, "config", None), "in_channels", 4) or 4) == 9
        for kind in JOB_KINDS:
            if inpaint_only and kind != "inpaint":
                continue
            pipe = _task_pipeline(base, kind)
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)
                pipes[kind] = pipe
        capabilities = diffusers_capabilities("txt2img" in pipes, "img2img" in pipes, "inpaint" in pipes)
        # OpenVINO's copy of the weights counts against the memory budget too (LoadedPipeline.size_bytes).
        return _Loaded(base, pipes, capabilities, size, self.device, accel=accel)

    def _load_pipeline(self, model: ModelRef) -> Any:
        import torch

        quiet_hf_libraries()
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        if model.source == "single_file":
            pipe = self._load_single_file(model, dtype)
        elif model.source in ("folder", "hub", "builtin"):
            pipe = self._load_folder(model, dtype)
        else:
            raise ModelLoadError(f"Model '{model.id}' has an unknown source {model.source!r}.")
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _load_folder(self, model: ModelRef, dtype: torch.dtype) -> Any:
        import diffusers

        path = _require_path(model)
        if not path.is_dir():
            raise ModelLoadError(
                f"Model '{model.id}' should be a diffusers folder but {path} is a file. If it is a .safetensors "
                f"checkpoint, import it as one with {IMPORT_HINT}."
            )
        try:
            inspect_model_path(path)  # a readable model_index.json, or a message saying what is wrong
        except ModelFileError as exc:
            raise ModelLoadError(f"Model '{model.id}': {exc}") from exc
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
        kwargs: dict[str, Any] = {**_dtype_kwarg(dtype), "local_files_only": True}
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        if "feature_extractor" in index:
            kwargs["feature_extractor"] = None  # only the safety checker uses it
        if _only_fp16_variant_weights(path):
            kwargs["variant"] = "fp16"
        return diffusers.DiffusionPipeline.from_pretrained(str(path), **kwargs)

    def _load_single_file(self, model: ModelRef, dtype: torch.dtype) -> Any:
        import diffusers

        path = _require_path(model)
        try:
            inspection = inspect_model_path(path)
        except ModelFileError as exc:
            raise ModelLoadError(f"Model '{model.id}': {exc}") from exc
        if inspection.format != "single_file":
            raise ModelLoadError(
                f"Model '{model.id}' is registered as a single file but {path} is a folder; re-import it with "
                f"{IMPORT_HINT}."
            )
        arch = model.arch or inspection.arch
        if arch not in SINGLE_FILE_ARCHS:
            raise ModelLoadError(
                f"Model '{model.id}': unknown architecture {arch!r} (supported: {', '.join(SINGLE_FILE_ARCHS)})."
            )
        if inspection.pipeline_class and "Inpaint" in inspection.pipeline_class:
            raise ModelLoadError(
                f"{path.name} is an inpainting checkpoint (9-channel UNet); single-file inpainting checkpoints "
                "are not supported yet. Use the diffusers-folder version of the model with "
                f"{IMPORT_HINT}."
            )
        config_dir = self.config_root / arch
        index_file = config_dir / "model_index.json"
        if not index_file.is_file():
            raise ModelLoadError(f"Architecture config for {arch!r} is missing at {config_dir}; reinstall Studiolo.")
        index = json.loads(index_file.read_text(encoding="utf-8"))
        pipeline_cls = getattr(diffusers, index["_class_name"])
        components: dict[str, Any] = {
            name: _load_tokenizer(config_dir / name) for name in ("tokenizer", "tokenizer_2") if name in index
        }
        try:
            return pipeline_cls.from_single_file(
                str(path), config=str(config_dir), local_files_only=True, **_dtype_kwarg(dtype), **components
            )
        except Exception as exc:
            if _is_oom(exc):
                raise
            hint = ""
            if model.arch and inspection.arch and model.arch != inspection.arch:
                hint = f" The file looks like {inspection.arch}, but the model is registered as {model.arch}."
            raise ModelLoadError(
                f"Could not load {path.name} as a {arch} checkpoint: {type(exc).__name__}: {exc}.{hint} The file "
                f"may be damaged or use an unsupported layout; import a diffusers folder instead with "
                f"{IMPORT_HINT}."
            ) from exc


# --- helpers --------------------------------------------------------------------------------------------------


def _default_cache_root() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / "studiolo-accel"


def _resolve_device(preference: str) -> str:
    import torch

    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, Any]:
    # Newer diffusers renamed ``torch_dtype`` to ``dtype`` (warning on the old name); older ones only know
    # ``torch_dtype``. Their shared helper for the rename tells which one this install expects.
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def _require_path(model: ModelRef) -> Path:
    if model.path is None:
        raise ModelLoadError(f"Model '{model.id}' has no path on disk; import it with {IMPORT_HINT}.")
    path = Path(model.path)
    if not path.exists():
        raise ModelLoadError(
            f"Model '{model.id}' is missing: nothing at {path}. It may have been moved or deleted; import it "
            f"again with {IMPORT_HINT}."
        )
    return path


def _only_fp16_variant_weights(path: Path) -> bool:
    """True when some component folder holds only ``*.fp16.*`` weights (as a hub download may)."""
    for component in path.iterdir():
        if not component.is_dir():
            continue
        weights = [p.name for p in component.iterdir() if p.suffix in (".safetensors", ".bin")]
        if weights and all(".fp16" in name for name in weights):
            return True
    return False


def _task_pipeline(base: Any, kind: JobKind) -> Any | None:
    import diffusers

    auto = {
        "txt2img": diffusers.AutoPipelineForText2Image,
        "img2img": diffusers.AutoPipelineForImage2Image,
        "inpaint": diffusers.AutoPipelineForInpainting,
    }[kind]
    try:
        return auto.from_pipe(base)
    except (ValueError, KeyError, TypeError, AttributeError):
        # AutoPipeline has no variant of this pipeline class for the task.
        return None


def _pipeline_bytes(pipe: Any) -> int:
    return module_bytes(*pipe.components.values())
