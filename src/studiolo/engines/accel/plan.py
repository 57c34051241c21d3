"""Which path a loaded model runs on, chosen once when it loads (issue 20; overview in ``__init__``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from studiolo.engines.accel import gate as quality
from studiolo.engines.accel.cache import AccelCache
from studiolo.engines.accel.cpu import has_native_bf16
from studiolo.engines.accel.openvino_modules import OpenVinoModules, convert, openvino_available
from studiolo.engines.base import ModelLoadError

if TYPE_CHECKING:
    from studiolo.engines.base import GenerationRequest

log = logging.getLogger(__name__)

CpuAccel = Literal["auto", "openvino", "bf16", "off"]
CpuPath = Literal["openvino", "bf16", "fp32"]
# Pipelines whose UNet and VAE the accelerated paths cover (SD 1.x/2.x incl. SD-Turbo, SDXL incl. SDXL-Turbo).
ACCELERATED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
OPENVINO_MISSING = (
    "STUDIOLO_CPU_ACCEL=openvino, but the openvino package is not installed; install it with "
    "`pip install openvino` or set STUDIOLO_CPU_ACCEL=auto."
)


@dataclass
class TorchUNetWeights:
    """The torch UNet's weights, released while OpenVINO draws every picture and read back for jobs that need them.

    On the openvino path OpenVINO holds its own copy of the UNet (two, in fact: the stored weights and the ones it
    repacks for its kernels), so keeping torch's too would make the accelerated model use more memory than the fp32
    one. Each tensor keeps its identity (only its storage goes), so the pipelines sharing the module and the
    adapter code that hooks into it see the same objects once the weights are back (``restore``, from the model's
    files: a memory-mapped load, then cast like the rest).
    """

    module: Any
    reload: Callable[[], Any]  # -> a freshly loaded fp32 pipeline of the same model (lazily, memory-mapped)
    released_bytes: int = 0

    def release(self) -> None:
        import torch

        for tensor in (*self.module.parameters(), *self.module.buffers()):
            self.released_bytes += tensor.numel() * tensor.element_size()
            tensor.data = torch.empty(0, dtype=tensor.dtype)

    def restore(self) -> None:
        """Read the weights back (no-op when they are here)."""
        if not self.released_bytes:
            return
        import torch

        fresh = self.reload().unet.state_dict()
        for name, tensor in self.module.state_dict(keep_vars=True).items():
            tensor.data = fresh[name].to(dtype=tensor.dtype)
        self.module.to(memory_format=torch.channels_last)
        log.info("read the torch UNet's weights back for a job with adapters (%d MB)", self.released_bytes >> 20)
        self.released_bytes = 0


@dataclass
class Acceleration:
    """The path one loaded model runs on, and why."""

    path: CpuPath | str  # also "cuda-fp16"... for GPU models (engine sets those)
    threads: int
    reason: str = ""
    quality: quality.GateResult | None = None
    openvino: OpenVinoModules | None = None
    needs_fp32_reload: bool = False  # every candidate failed after the modules were cast: load fp32 again
    # GPUs: decode pictures above this many pixels tile by tile (VAE tiling), which bounds the decoder's memory.
    tile_vae_above: int | None = None
    torch_unet: TorchUNetWeights | None = None  # openvino path: the torch UNet's weights, released until needed

    def describe(self) -> str:
        text = f"path {self.path}, {self.threads} thread(s)"
        if self.quality is not None:
            text += f", quality gate: {self.quality.describe()}"
        return text + (f" ({self.reason})" if self.reason else "")

    def extra_bytes(self) -> int:
        """Bytes beyond the torch modules' current ones: OpenVINO's weights, and a restored torch UNet's."""
        ov = self.openvino.size_bytes if self.openvino is not None else 0
        restored = self.torch_unet is not None and not self.torch_unet.released_bytes
        return ov + (_unet_bytes(self.torch_unet.module) if restored and self.torch_unet is not None else 0)

    @contextmanager
    def active(self, base: Any, request: GenerationRequest) -> Iterator[bool]:
        """Run the block with the accelerated modules when this job can use them; yields whether it does.

        LoRA weights, ControlNet residuals and reference-image attention live in the torch modules only, so a job
        with any of them runs on those (in bf16 on this path).
        """
        usable = not request.loras and not request.controls and request.reference is None
        if not usable and self.torch_unet is not None:
            self.torch_unet.restore()
        vae: Any = getattr(base, "vae", None)
        tile = (
            self.tile_vae_above is not None
            and request.width * request.height > self.tile_vae_above
            and hasattr(vae, "enable_tiling")
        )
        if tile:
            vae.enable_tiling()
        try:
            with self.modules(base, usable) as used:
                yield used
        finally:
            if tile:
                vae.disable_tiling()

    @contextmanager
    def modules(self, base: Any, accelerated: bool = True) -> Iterator[bool]:
        """Route ``base``'s calls to the accelerated modules in the block (if this path has any and asked to)."""
        use = accelerated and self.openvino is not None
        with self.openvino.patched(base) if use and self.openvino is not None else nullcontext():
            yield use


def _unet_bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _cast_bf16(base: Any) -> None:
    import torch

    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            module.to(dtype=torch.bfloat16)
            if name in ("unet", "vae"):  # convolutions: oneDNN's bf16 kernels want NHWC
                module.to(memory_format=torch.channels_last)


def _candidates(setting: CpuAccel) -> tuple[list[CpuPath], bool]:
    """Paths to try in order, and whether the setting forces the first one."""
    if setting == "openvino":
        if not openvino_available():
            raise ModelLoadError(OPENVINO_MISSING)
        return ["openvino"], True
    if setting == "bf16":
        return ["bf16"], True
    found: list[CpuPath] = []
    if openvino_available():
        found.append("openvino")
    if has_native_bf16():
        found.append("bf16")
    return found, False


def choose_cpu_path(
    base: Any,
    model_path: Path | None,
    *,
    setting: CpuAccel,
    cache: AccelCache,
    threads: int,
    reload: Callable[[], Any] | None = None,
) -> Acceleration:
    """Pick and set up the path for ``base`` (an fp32 pipeline on the CPU, as loaded); may cast it to bf16.

    ``reload`` loads the same pipeline again (fp32, memory-mapped): on the openvino path the torch UNet's weights
    are then released and read back from it when a job needs them (``TorchUNetWeights``)."""
    if setting == "off":
        return Acceleration("fp32", threads, "STUDIOLO_CPU_ACCEL=off")
    if type(base).__name__ not in ACCELERATED_PIPELINES:
        return Acceleration("fp32", threads, f"{type(base).__name__} has no accelerated path")
    if model_path is None:
        return Acceleration("fp32", threads, "no model files to key a conversion cache by")
    candidates, forced = _candidates(setting)
    if not candidates:
        return Acceleration("fp32", threads, "this CPU has no bf16 arithmetic and OpenVINO is not installed")
    key = cache.key(model_path, device="cpu", extra=type(base).__name__)
    bf16 = has_native_bf16()
    folder = _entry(base, cache, key, converted="openvino" in candidates)
    # Compiled while the modules are still fp32: a damaged entry can then be converted again.
    compiled = _compile(base, cache, key, threads=threads, bf16=bf16) if "openvino" in candidates else None
    results = quality.read_results(folder)
    side = quality.gate_side(base)
    # The fp32 reference costs an fp32 picture: drawn only when a path that would be tried has no figures yet.
    must_measure, stored = _stored_choice(candidates, results, forced)
    reference = quality.render(base, side) if must_measure else None
    # The torch modules run in bf16 wherever the CPU has bf16 arithmetic, and on the bf16 path anyway: forced on a
    # CPU that emulates bf16 it is slow (its reason says so), but it is still the path asked for, not fp32.
    cast = bf16 or "bf16" in candidates
    # Known from stored figures to end on openvino: the UNet goes before the cast, which then never reads it.
    release_first = compiled is not None and stored == "openvino"
    unet_weights = TorchUNetWeights(base.unet, reload) if reload is not None and compiled is not None else None
    if release_first and unet_weights is not None:
        unet_weights.release()
    if cast:
        _cast_bf16(base)
    chosen: Acceleration | None = None
    for path in candidates:
        accel = Acceleration(path, threads, openvino=compiled if path == "openvino" else None)
        if path == "bf16" and not bf16:
            accel.reason = "forced; this CPU emulates bf16, so it is slower than fp32"
        if path not in results:
            assert reference is not None
            with accel.modules(base):
                results[path] = quality.compare(reference, quality.render(base, side), side)
            quality.write_results(folder, results)
        accel.quality = results[path]
        if accel.quality.passed or forced:
            if not accel.quality.passed:
                log.warning("path %s fails the quality gate (%s) but is forced", path, accel.quality.describe())
                accel.reason = "forced by STUDIOLO_CPU_ACCEL despite failing the quality gate"
            chosen = accel
            break
        log.warning("path %s fails the quality gate (%s); not using it", path, accel.quality.describe())
    if chosen is None:
        return Acceleration("fp32", threads, "no accelerated path passed the quality gate", needs_fp32_reload=cast)
    if chosen.path == "openvino":
        if not bf16:
            chosen.reason = "fp32 inside OpenVINO: this CPU has no bf16 arithmetic"
        chosen.torch_unet = unet_weights
        if unet_weights is not None and not release_first:
            unet_weights.release()
    return chosen


def _stored_choice(
    candidates: list[CpuPath], results: dict[str, quality.GateResult], forced: bool
) -> tuple[bool, str | None]:
    """Trying ``candidates`` in order on stored figures: (whether it reaches a path without figures, which must
    then be measured; the path the figures choose, if they settle it)."""
    for path in candidates:
        if path not in results:
            return True, None
        if results[path].passed or forced:
            return False, path
    return False, None


def _entry(base: Any, cache: AccelCache, key: str, *, converted: bool) -> Path:
    """The model's cache entry, built (and its OpenVINO files converted) if missing or damaged."""
    manifest = cache.read(key)
    if manifest is not None and (not converted or manifest.get("openvino")):
        return cache.entry_dir(key)
    started = time.perf_counter()
    with cache.build(key) as (tmp, new):
        if converted:
            convert(base, tmp)
        new["openvino"] = converted
    if converted:
        log.info("converted the model for OpenVINO in %.0f s (cached in %s)", time.perf_counter() - started, tmp.parent)
    return cache.entry_dir(key)


def _compile(base: Any, cache: AccelCache, key: str, *, threads: int, bf16: bool) -> OpenVinoModules:
    """Compile the cached IR (``base`` still fp32); files OpenVINO cannot read are converted again, once."""
    try:
        return OpenVinoModules(cache.entry_dir(key), threads=threads, bf16=bf16)
    except RuntimeError as exc:  # OpenVINO reports unreadable or truncated IR files as RuntimeError
        cache.discard(key, f"OpenVINO could not load it: {exc}")
    return OpenVinoModules(_entry(base, cache, key, converted=True), threads=threads, bf16=bf16)
