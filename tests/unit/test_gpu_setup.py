"""The GPU setup of a loaded pipeline (engines/accel/setup.py ``_gpu``, plan.py ``Acceleration.active``), run on the
CPU with the tiny pipeline: none of it needs CUDA (channels-last weights, VAE tiling switched per request, the path's
name), so it is checked here, where CI runs, and bench/gpu.py measures its speed on a GPU.

torch.compile is only checked to wrap the UNet and name the path: compiling (and running compiled) takes minutes on
a CPU, so a compiled UNet is never run here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from studiolo.engines.accel.cache import AccelCache
from studiolo.engines.accel.plan import Acceleration
from studiolo.engines.accel.setup import GPU_VAE_TILING_PIXELS, _gpu, accelerate
from studiolo.engines.base import GenerationRequest, ModelRef
from studiolo.engines.diffusers_engine import DiffusersEngine
from tests.tiny_pipeline import make_tiny_sd_pipeline

# diffusers' schedulers trip numpy 2 deprecation warnings inside diffusers itself (as in test_diffusers_engine.py).
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.usefixtures("one_torch_thread"),
]

SMALL_TILING = 64 * 64  # the tiny model draws 64x64: larger requests are decoded tile by tile


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sd")


@pytest.fixture
def base(tiny_dir: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _model(path: Path) -> ModelRef:
    return ModelRef(id="tiny", engine="diffusers", source="folder", path=path)


def _request(model: ModelRef, side: int) -> GenerationRequest:
    return GenerationRequest(model=model, prompt="a lighthouse", seeds=[5], width=side, height=side, steps=2)


def _conv_weights(module: Any) -> list[Any]:
    """The 4-D weights whose layouts differ: 1x1 kernels are both contiguous and channels-last at once."""
    return [p for p in module.parameters() if p.dim() == 4 and p.shape[-1] > 1]


def _channels_last(module: Any) -> list[bool]:
    import torch

    return [p.is_contiguous(memory_format=torch.channels_last) for p in _conv_weights(module)]


# --- _gpu ---------------------------------------------------------------------------------------------------


def test_gpu_setup_puts_unet_and_vae_weights_channels_last(base: Any) -> None:
    import torch

    assert _conv_weights(base.unet) and _conv_weights(base.vae)
    assert not any(_channels_last(base.unet)) and not any(_channels_last(base.vae))  # as loaded: NCHW
    text_encoder = {name: p.data_ptr() for name, p in base.text_encoder.named_parameters()}

    accel = _gpu(base, "off", 2)

    assert all(_channels_last(base.unet)) and all(_channels_last(base.vae))
    assert {name: p.data_ptr() for name, p in base.text_encoder.named_parameters()} == text_encoder
    assert isinstance(base.unet, torch.nn.Module) and type(base.unet).__name__ == "UNet2DConditionModel"
    assert accel.path == "cuda-float32"  # named after the UNet's dtype (fp16 when the engine loads for CUDA)
    assert accel.threads == 2
    assert accel.tile_vae_above == GPU_VAE_TILING_PIXELS
    assert accel.openvino is None and not accel.needs_fp32_reload and accel.extra_bytes() == 0


# torch.compile's first use imports torch internals that still use torch.jit (a DeprecationWarning of torch's own).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_gpu_setup_with_compile_wraps_the_unet_and_names_it(base: Any) -> None:
    """torch.compile only wraps here (compiling happens at the first call, which this test never makes)."""
    unet = base.unet
    accel = _gpu(base, "max-autotune", 2)
    assert type(base.unet).__name__ == "OptimizedModule" and base.unet._orig_mod is unet
    assert accel.path == "cuda-float32+compile(max-autotune)"
    assert all(_channels_last(unet)) and all(_channels_last(base.vae))


def test_accelerate_sends_cuda_devices_to_the_gpu_setup(base: Any, tmp_path: Path) -> None:
    def reload() -> Any:
        raise AssertionError("a GPU model is never reloaded in fp32")

    cache = AccelCache(tmp_path / "accel")
    same, accel = accelerate(
        base, _model(tmp_path), device="cuda:0", cpu_accel="auto", cache=cache, threads=3, reload_fp32=reload
    )
    assert same is base
    assert accel.path == "cuda-float32" and accel.tile_vae_above == GPU_VAE_TILING_PIXELS and accel.threads == 3
    assert all(_channels_last(base.unet))
    assert not (tmp_path / "accel").exists() or not any((tmp_path / "accel").iterdir())  # no CPU conversion


@pytest.mark.parametrize("device", ["mps", "xpu:1"])
def test_accelerate_on_other_devices_names_the_device_and_leaves_the_modules(
    base: Any, tmp_path: Path, device: str
) -> None:
    def reload() -> Any:
        raise AssertionError("only the CPU path reloads")

    before = _parameters(base)
    cache = AccelCache(tmp_path / "accel")
    same, accel = accelerate(
        base, _model(tmp_path), device=device, cpu_accel="auto", cache=cache, threads=3, reload_fp32=reload
    )
    assert same is base
    assert accel.path == f"{device}-float32"
    assert accel.threads == 3 and accel.tile_vae_above is None and accel.openvino is None
    assert _parameters(base) == before  # same tensors, same layouts, same dtypes
    assert type(base.unet).__name__ == "UNet2DConditionModel"
    assert not (tmp_path / "accel").exists() or not any((tmp_path / "accel").iterdir())


def _parameters(base: Any) -> dict[str, tuple[int, tuple[int, ...], Any]]:
    return {
        f"{component}.{name}": (p.data_ptr(), p.stride(), p.dtype)
        for component in ("unet", "vae", "text_encoder")
        for name, p in getattr(base, component).named_parameters()
    }


# --- Acceleration.active: VAE tiling per request ------------------------------------------------------------


@pytest.mark.parametrize(("side", "tiled"), [(32, False), (64, False), (72, True), (128, True)])
def test_vae_tiling_is_on_only_inside_the_block_for_requests_above_the_threshold(
    base: Any, tmp_path: Path, side: int, tiled: bool
) -> None:
    accel = Acceleration("cuda-float16", 2, tile_vae_above=SMALL_TILING)
    assert not base.vae.use_tiling
    with accel.active(base, _request(_model(tmp_path), side)) as used:
        assert base.vae.use_tiling is tiled
        assert used is False  # a GPU path has no OpenVINO modules to route to
    assert not base.vae.use_tiling


def test_vae_tiling_is_turned_off_when_the_job_raises(base: Any, tmp_path: Path) -> None:
    accel = Acceleration("cuda-float16", 2, tile_vae_above=SMALL_TILING)
    with pytest.raises(RuntimeError, match="out of memory"), accel.active(base, _request(_model(tmp_path), 128)):
        assert base.vae.use_tiling
        raise RuntimeError("CUDA out of memory")
    assert not base.vae.use_tiling


def test_no_threshold_never_tiles(base: Any, tmp_path: Path) -> None:
    with Acceleration("fp32", 2).active(base, _request(_model(tmp_path), 2048)):
        assert not base.vae.use_tiling


# --- a job through the engine with the GPU setup ------------------------------------------------------------


def test_engine_job_with_the_gpu_setup_draws_the_requested_size(tiny_dir: Path, monkeypatch: Any) -> None:
    """The engine's loaded model set up as on a GPU (channels-last, tiling above a small threshold): a picture above
    the threshold is decoded in tiles and comes out at the requested size, one at the threshold in one piece."""
    engine = DiffusersEngine(device="cpu", threads=1)
    model = _model(tiny_dir)
    engine.load(model)
    entry = engine._cache[model.id]
    entry.accel = replace(_gpu(entry.base, "off", engine.threads), tile_vae_above=SMALL_TILING)
    vae = entry.base.vae
    assert entry.pipes["txt2img"].vae is vae  # the task pipelines share the loaded modules
    tiled_calls: list[tuple[int, ...]] = []
    tiled_decode = vae.tiled_decode

    def spy(z: Any, *args: Any, **kwargs: Any) -> Any:
        tiled_calls.append(tuple(z.shape))
        return tiled_decode(z, *args, **kwargs)

    monkeypatch.setattr(vae, "tiled_decode", spy)

    def draw(side: int) -> np.ndarray:
        (image,) = engine.generate(_request(model, side), lambda s, t, preview=None, image=0: None, lambda: False)
        return np.asarray(image.image)

    big = draw(96)
    assert big.shape == (96, 96, 3)
    assert tiled_calls and tiled_calls[0][-2:] == (48, 48)  # the latents of 96 px (the tiny VAE scales by 2)
    assert big.std() > 0  # a picture, not a blank
    assert not vae.use_tiling  # switched off again after the job

    tiled_calls.clear()
    small = draw(64)
    assert small.shape == (64, 64, 3)
    assert tiled_calls == []
    assert all(_channels_last(entry.base.unet))  # the job ran on the channels-last modules
