"""The upscalers: the built-in Lanczos + sharpen engine, and diffusers' SD x4 and latent x2 upscalers as tiny random
pipelines (tests/tiny_pipeline.py) loaded through Studiolo's own model inspection and DiffusersEngine, on the CPU."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from studiolo.engines.base import Engine, EngineError, GenerationCanceled, GenerationRequest, ModelRef
from studiolo.engines.model_files import inspect_model_path
from studiolo.engines.upscale import LanczosUpscaleEngine, upscale_image
from tests.tiny_pipeline import make_tiny_upscale_pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.usefixtures("one_torch_thread"),
]

LANCZOS = ModelRef(id="lanczos", engine="lanczos", source="builtin")


def _picture(size: int = 32, seed: int = 0) -> Image.Image:
    """Blocks of colour with hard edges: what an upscaler must keep sharp."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST)


def _request(model: ModelRef, image: Image.Image, factor: int, **kw: Any) -> GenerationRequest:
    values: dict[str, Any] = {"prompt": "a fox", "seeds": [3], "steps": 1, "guidance": 0.0, **kw}
    return GenerationRequest(
        model=model,
        kind="upscale",
        init_image=image,
        width=image.width * factor,
        height=image.height * factor,
        **values,
    )


def _no_steps(step: int, total: int, /, preview: Any = None) -> None:
    return None


def _edge_strength(image: Image.Image) -> float:
    return float(np.asarray(image.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float32).mean())


# --- Lanczos ------------------------------------------------------------------------------------------------------


def test_lanczos_engine_upscales_to_the_requested_size() -> None:
    engine = LanczosUpscaleEngine()
    assert isinstance(engine, Engine)
    caps = engine.capabilities(LANCZOS)
    assert caps.upscale and not (caps.txt2img or caps.img2img or caps.inpaint)
    steps: list[tuple[int, int]] = []
    out = engine.generate(
        _request(LANCZOS, _picture(), 4, seeds=[1, 2]), lambda s, t, preview=None: steps.append((s, t)), lambda: False
    )
    assert [o.seed for o in out] == [1, 2] and steps == [(1, 1)]
    assert all(o.image.size == (128, 128) and o.image.mode == "RGB" for o in out)
    assert np.array_equal(np.asarray(out[0].image), np.asarray(out[1].image))  # the image alone decides
    assert not engine.is_loaded("lanczos")
    engine.load(LANCZOS)
    assert engine.is_loaded("lanczos")


def test_lanczos_sharpens_what_plain_resampling_softens() -> None:
    source = _picture(32)
    plain = source.resize((128, 128), Image.Resampling.LANCZOS)
    sharpened = upscale_image(source, 128, 128)
    assert _edge_strength(sharpened) > 1.1 * _edge_strength(plain)
    # ... and keeps the picture: colours on average where they were.
    diff = np.abs(np.asarray(sharpened, dtype=np.int16) - np.asarray(plain, dtype=np.int16))
    assert diff.mean() < 8
    assert upscale_image(source, 64, 64).size == (64, 64)


def test_lanczos_refuses_what_it_cannot_do() -> None:
    engine = LanczosUpscaleEngine()
    with pytest.raises(EngineError) as exc:
        engine.generate(GenerationRequest(model=LANCZOS, prompt="x", seeds=[1]), _no_steps, lambda: False)
    assert exc.value.code == "unsupported_task"
    with pytest.raises(EngineError) as exc:
        engine.generate(replace(_request(LANCZOS, _picture(), 2), init_image=None), _no_steps, lambda: False)
    assert exc.value.code == "invalid_request"
    with pytest.raises(GenerationCanceled):
        engine.generate(_request(LANCZOS, _picture(), 2), _no_steps, lambda: True)


# --- diffusers upscalers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("upscalers")
    return {
        "x4": make_tiny_upscale_pipeline(root / "x4", seed=0),
        "latent": make_tiny_upscale_pipeline(root / "latent", seed=1, latent=True),
    }


@pytest.fixture(scope="module")
def engine() -> Any:
    from studiolo.engines.diffusers_engine import DiffusersEngine

    return DiffusersEngine(device="cpu")


# (fixture key, arch, factor, source side): the latent upscaler's 4-level VAE and UNet need 64 px to work on.
CASES = [("x4", "sd-x4-upscaler", 4, 32), ("latent", "sd-x2-latent-upscaler", 2, 64)]


@pytest.mark.parametrize(("key", "arch", "factor", "side"), CASES, ids=[c[0] for c in CASES])
def test_diffusers_upscaler_loads_and_upscales(
    upscalers: dict[str, Path], engine: Any, key: str, arch: str, factor: int, side: int
) -> None:
    inspection = inspect_model_path(upscalers[key])
    assert inspection.arch == arch and inspection.format == "folder"
    model = ModelRef(id=f"tiny-{key}", engine="diffusers", source="folder", path=upscalers[key])
    before = engine.capabilities(model)  # judged from the files, before loading
    assert before.upscale and not (before.txt2img or before.img2img or before.inpaint)

    steps: list[tuple[int, int]] = []
    request = _request(model, _picture(side), factor, steps=2, seeds=[5])
    out = engine.generate(request, lambda s, t, preview=None: steps.append((s, t)), lambda: False)
    assert engine.is_loaded(model.id) and engine.capabilities(model) == before
    assert len(out) == 1 and out[0].seed == 5 and out[0].image.size == (side * factor, side * factor)
    assert steps == [(1, 2), (2, 2)]
    again = engine.generate(request, _no_steps, lambda: False)
    assert np.array_equal(np.asarray(out[0].image), np.asarray(again[0].image))
    other = engine.generate(_request(model, _picture(side), factor, steps=2, seeds=[6]), _no_steps, lambda: False)
    assert not np.array_equal(np.asarray(out[0].image), np.asarray(other[0].image))

    with pytest.raises(EngineError) as exc:  # it draws nothing
        engine.generate(GenerationRequest(model=model, prompt="a fox", seeds=[1], steps=2), _no_steps, lambda: False)
    assert exc.value.code == "unsupported_task"


def test_diffusers_upscale_stops_at_a_step_when_canceled(upscalers: dict[str, Path], engine: Any) -> None:
    model = ModelRef(id="tiny-x4", engine="diffusers", source="folder", path=upscalers["x4"])
    seen: list[int] = []

    def on_step(step: int, total: int, /, preview: Any = None) -> None:
        seen.append(step)

    with pytest.raises(GenerationCanceled):
        engine.generate(_request(model, _picture(), 4, steps=3), on_step, lambda: bool(seen))
    assert seen == [1]
