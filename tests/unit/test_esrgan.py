"""The ESRGAN-family upscaler engine (engines/esrgan.py, esrgan_files.py, esrgan_nets.py) on tiny random nets
written in the layouts users download (tests/tiny_esrgan.py): detection from the header, the sizes it makes, tiles
without seams, the original and Real-ESRGAN layouts computing the same thing, cancel, and damaged or unsafe files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch.nn import functional

from studiolo.engines.base import GenerationCanceled, GenerationRequest, ModelLoadError, ModelRef
from studiolo.engines.esrgan import EsrganFileError, EsrganUpscaleEngine, pass_sizes
from studiolo.engines.esrgan_files import detect_esrgan
from studiolo.engines.model_files import UPSCALER_FACTORS, ModelFileError, inspect_model_path, read_safetensors_header
from tests.tiny_esrgan import compact_state, make_compact, make_rrdb, rrdb_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _picture(width: int = 40, height: int = 28, seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    # A smooth gradient plus noise: tile seams would show as steps in it.
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    return Image.fromarray((base + rng.integers(0, 50, (height, width, 3))).astype(np.uint8))


def _ref(path: Path, model_id: str = "up") -> ModelRef:
    return ModelRef(id=model_id, engine="esrgan", source="single_file", path=path)


def _upscale(
    engine: EsrganUpscaleEngine, path: Path, image: Image.Image, size: tuple[int, int], **kw: Any
) -> Image.Image:
    request = GenerationRequest(
        model=_ref(path), prompt="", seeds=[1], width=size[0], height=size[1], kind="upscale", init_image=image
    )
    return engine.generate(request, kw.get("on_step", lambda *a, **k: None), kw.get("cancel", lambda: False))[0].image


@pytest.mark.parametrize(
    ("make", "arch", "blocks", "unshuffle"),
    [
        (lambda p: make_rrdb(p, scale=4, layout="real-esrgan", nb=2), "esrgan-x4", 2, 1),
        (lambda p: make_rrdb(p, scale=4, layout="esrgan", nb=2), "esrgan-x4", 2, 1),
        (lambda p: make_rrdb(p, scale=2, layout="real-esrgan"), "esrgan-x2", 1, 2),
        (lambda p: make_rrdb(p, scale=2, layout="esrgan"), "esrgan-x2", 1, 2),
        (lambda p: make_rrdb(p, scale=1, layout="real-esrgan"), "esrgan-x1", 1, 4),
        (lambda p: make_compact(p, scale=4), "compact-x4", 2, 1),
        (lambda p: make_compact(p, scale=2), "compact-x2", 2, 1),
    ],
)
def test_the_net_and_scale_are_read_from_the_header(
    tmp_path: Path, make: Any, arch: str, blocks: int, unshuffle: int
) -> None:
    path = make(tmp_path / "up.safetensors")
    layout = detect_esrgan(read_safetensors_header(path))
    assert layout is not None
    assert (layout.arch, layout.blocks, layout.unshuffle, layout.features) == (arch, blocks, unshuffle, 8)
    info = inspect_model_path(path)
    assert (info.format, info.arch, info.pipeline_class) == ("single_file", arch, None)
    assert UPSCALER_FACTORS[arch] == (2, 4)


def test_other_tensors_are_not_taken_for_an_upscaler(tmp_path: Path) -> None:
    lora = {"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)}
    assert detect_esrgan({k: {"shape": list(v.shape)} for k, v in lora.items()}) is None
    # A compact net whose last conv does not make out_channels * scale**2 channels (scale 3 is not offered).
    state = compact_state(scale=3)
    assert detect_esrgan({k: {"shape": list(v.shape)} for k, v in state.items()}) is None
    path = tmp_path / "lora.safetensors"
    save_file(lora, str(path))
    with pytest.raises(ModelFileError) as refused:
        inspect_model_path(path)
    assert refused.value.code == "model_format_unsupported"


@pytest.mark.parametrize(
    ("scale", "layout", "factor"),
    [(4, "real-esrgan", 4), (4, "esrgan", 2), (2, "real-esrgan", 2), (2, "esrgan", 4), (1, "real-esrgan", 2)],
)
def test_rrdb_upscales_to_the_asked_size(tmp_path: Path, scale: int, layout: Any, factor: int) -> None:
    path = make_rrdb(tmp_path / "up.safetensors", scale=scale, layout=layout)
    image = _picture(23, 17)  # odd sizes: the x2/x1 nets pad to their unshuffle grid
    out = _upscale(EsrganUpscaleEngine(device="cpu"), path, image, (23 * factor, 17 * factor))
    assert out.size == (23 * factor, 17 * factor) and out.mode == "RGB"


def test_passes_run_the_net_until_the_size_is_reached() -> None:
    assert pass_sizes((10, 10), (40, 40), 2) == [(10, 10), (20, 20)]  # an x2 net twice for 4x
    assert pass_sizes((10, 10), (20, 20), 4) == [(10, 10)]  # once, then Lanczos down to 2x
    assert pass_sizes((10, 10), (40, 40), 1) == [(10, 10)]  # a 1x net does not grow: once, then Lanczos
    assert len(pass_sizes((1, 1), (8192, 8192), 2)) == 3  # never more than three passes


@pytest.mark.parametrize("make", [lambda p: make_rrdb(p, scale=4), lambda p: make_rrdb(p, scale=2), make_compact])
def test_tiles_leave_no_seams(tmp_path: Path, make: Any) -> None:
    """Tiles with enough overlap give the whole-image result (the tiny nets see ~20 pixels around each one)."""
    path = make(tmp_path / "up.safetensors")
    image = _picture(52, 36)
    whole = EsrganUpscaleEngine(device="cpu", tile=256)
    tiled = EsrganUpscaleEngine(device="cpu", tile=16, overlap=24)
    a = whole.run_tiles(whole._acquire(_ref(path)), image)
    b = tiled.run_tiles(tiled._acquire(_ref(path)), image)
    assert a.shape == b.shape and a.shape[0] == 36 * (a.shape[0] // 36)
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1
    # With no overlap the tile borders differ: the check above can fail.
    bare = EsrganUpscaleEngine(device="cpu", tile=16, overlap=0)
    c = bare.run_tiles(bare._acquire(_ref(path)), image)
    assert int(np.abs(a.astype(int) - c.astype(int)).max()) > 1


def test_both_layouts_of_the_same_weights_give_the_same_pixels(tmp_path: Path) -> None:
    engine = EsrganUpscaleEngine(device="cpu")
    image = _picture()
    new = _upscale(engine, make_rrdb(tmp_path / "new.safetensors", seed=5), image, (160, 112))
    old = _upscale(engine, make_rrdb(tmp_path / "old.safetensors", seed=5, layout="esrgan"), image, (160, 112))
    assert np.array_equal(np.asarray(new), np.asarray(old))
    other = _upscale(engine, make_rrdb(tmp_path / "other.safetensors", seed=6), image, (160, 112))
    assert not np.array_equal(np.asarray(new), np.asarray(other))  # the weights matter


def test_compact_matches_the_reference_computation(tmp_path: Path) -> None:
    """SRVGGNetCompact as Real-ESRGAN defines it, written out with torch's functions: convs and PReLUs, a pixel
    shuffle, plus the nearest-neighbour enlargement of the input."""
    path = make_compact(tmp_path / "c.safetensors", seed=2)
    state = compact_state(seed=2)
    image = _picture(20, 12)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    out = x
    for i in range(0, 7, 2):
        out = functional.conv2d(out, state[f"body.{i}.weight"], state[f"body.{i}.bias"], padding=1)
        if i < 6:
            out = functional.prelu(out, state[f"body.{i + 1}.weight"])
    out = functional.pixel_shuffle(out, 4) + functional.interpolate(x, scale_factor=4, mode="nearest")
    expected = (out[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    got = np.asarray(_upscale(EsrganUpscaleEngine(device="cpu"), path, image, (80, 48)))
    assert int(np.abs(got.astype(int) - expected.astype(int)).max()) <= 1


def test_results_are_deterministic_and_steps_count_tiles(tmp_path: Path) -> None:
    path = make_rrdb(tmp_path / "up.safetensors", scale=2)
    engine = EsrganUpscaleEngine(device="cpu", tile=16)
    steps: list[tuple[int, int]] = []
    first = _upscale(engine, path, _picture(40, 20), (160, 80), on_step=lambda s, t, **k: steps.append((s, t)))
    # Two passes of the x2 net: 3x2 tiles of 40x20, then 5x3 tiles of 80x40.
    assert steps == [(i, 21) for i in range(1, 22)]
    again = _upscale(engine, path, _picture(40, 20), (160, 80))
    assert np.array_equal(np.asarray(first), np.asarray(again))


def test_cancel_stops_between_tiles(tmp_path: Path) -> None:
    path = make_rrdb(tmp_path / "up.safetensors")
    engine = EsrganUpscaleEngine(device="cpu", tile=16)
    steps: list[int] = []
    with pytest.raises(GenerationCanceled):
        _upscale(
            engine,
            path,
            _picture(64, 64),
            (256, 256),
            on_step=lambda s, t, **k: steps.append(s),
            cancel=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]
    assert engine.is_loaded("up")  # the net stays loaded for the next job


def test_loaded_nets_are_counted_and_the_least_recent_dropped(tmp_path: Path) -> None:
    engine = EsrganUpscaleEngine(device="cpu", max_models=1)
    engine.load(_ref(make_rrdb(tmp_path / "a.safetensors"), "a"))
    params = sum(t.numel() for t in rrdb_state().values())
    assert engine.loaded_bytes() == params * 4
    engine.load(_ref(make_compact(tmp_path / "b.safetensors"), "b"))
    assert engine.is_loaded("b") and not engine.is_loaded("a")


def test_a_damaged_file_is_refused_as_corrupt(tmp_path: Path) -> None:
    path = make_rrdb(tmp_path / "up.safetensors")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    engine = EsrganUpscaleEngine(device="cpu")
    with pytest.raises(ModelLoadError) as refused:
        engine.load(_ref(truncated))
    assert refused.value.code == "model_file_corrupt"
    # A complete header whose net lacks a tensor: the strict load refuses it, nothing runs with random weights.
    state = rrdb_state()
    del state["body.0.rdb2.conv3.bias"]
    partial = tmp_path / "partial.safetensors"
    save_file(state, str(partial))
    with pytest.raises(EsrganFileError) as refused_partial:
        engine.load(_ref(partial, "partial"))
    assert refused_partial.value.code == "model_file_corrupt" and "conv3" in str(refused_partial.value)
    assert not engine.is_loaded("partial")


def test_pickles_are_refused_unopened(tmp_path: Path) -> None:
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save(rrdb_state(), path)
    with pytest.raises(EsrganFileError) as refused:
        EsrganUpscaleEngine(device="cpu").load(_ref(path))
    assert refused.value.code == "model_format_unsupported"
    with pytest.raises(ModelFileError) as refused_import:
        inspect_model_path(path)
    assert refused_import.value.code == "model_format_unsupported"
