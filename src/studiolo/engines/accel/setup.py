"""Setting up a freshly loaded diffusers pipeline for its device (issue 20): the engine's one call."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from studiolo.engines.accel.cache import AccelCache
from studiolo.engines.accel.cpu import physical_cores
from studiolo.engines.accel.plan import Acceleration, CpuAccel, choose_cpu_path
from studiolo.engines.base import ModelLoadError, ModelRef

log = logging.getLogger(__name__)

GpuCompile = Literal["off", "default", "max-autotune"]
# Above this many pixels a GPU decodes the picture tile by tile (the decoder's activations grow with the area).
GPU_VAE_TILING_PIXELS = 1024 * 1024


def resolve_threads(threads: int) -> int:
    """The engine's torch/OpenVINO thread count: ``threads``, or one per physical core for 0."""
    return threads if threads > 0 else physical_cores()


def accelerate(
    base: Any,
    model: ModelRef,
    *,
    device: str,
    cpu_accel: CpuAccel,
    cache: AccelCache,
    threads: int,
    gpu_compile: GpuCompile = "off",
    reload_fp32: Callable[[], Any],
) -> tuple[Any, Acceleration]:
    """Return the pipeline to use (``base``, or a fresh fp32 load) and the path it runs on; logs the choice."""
    if device.startswith("cuda"):
        accel = _gpu(base, gpu_compile, threads)
    elif device == "cpu":
        try:
            accel = choose_cpu_path(
                base, model.path, setting=cpu_accel, cache=cache, threads=threads, reload=reload_fp32
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # a model the converter cannot trace: run it as loaded, unless a path is forced
            if cpu_accel != "auto":
                raise ModelLoadError(
                    f"STUDIOLO_CPU_ACCEL={cpu_accel} could not be set up for model '{model.id}': "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            log.warning("model %s: no accelerated CPU path (%s: %s)", model.id, type(exc).__name__, exc)
            accel = Acceleration("fp32", threads, f"acceleration failed: {type(exc).__name__}", needs_fp32_reload=True)
        if accel.needs_fp32_reload:
            base = reload_fp32()
        return_freed_memory()
    else:
        accel = Acceleration(f"{device}-{str(getattr(base, 'dtype', '')).removeprefix('torch.')}", threads)
    log.info(
        "model %s on %s: %s; %d physical core(s) here",
        model.id,
        device,
        accel.describe(),
        physical_cores(),
    )
    return base, accel


def return_freed_memory() -> None:
    """Hand the memory a load freed back to the system (glibc only; elsewhere nothing happens).

    Casting fp32 weights to bf16 and tracing a model for OpenVINO free gigabytes in many blocks, which glibc keeps
    for reuse: measured on SD-Turbo's first load, the server stayed ~3 GB larger than after a restart without this.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not Linux with glibc
        return


def _gpu(base: Any, compile_mode: GpuCompile, threads: int) -> Acceleration:
    """fp16 weights (loaded so), channels-last convolutions, SDPA attention (diffusers' default with torch 2),
    tiled VAE decoding for big pictures, and optionally a compiled UNet."""
    import torch

    for name in ("unet", "vae"):
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            module.to(memory_format=torch.channels_last)
    path = f"cuda-{str(base.unet.dtype).removeprefix('torch.')}" if getattr(base, "unet", None) is not None else "cuda"
    if compile_mode != "off" and isinstance(getattr(base, "unet", None), torch.nn.Module):
        # max-autotune also captures CUDA graphs, which pays off most for few-step (turbo) models.
        base.unet = torch.compile(base.unet, mode=compile_mode)
        path += f"+compile({compile_mode})"
    return Acceleration(path, threads, tile_vae_above=GPU_VAE_TILING_PIXELS)
