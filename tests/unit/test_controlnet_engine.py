"""ControlNet units in the diffusers engine (engines/controlnet.py), with a tiny random pipeline and ControlNet
(tests/tiny_pipeline.py, tests/tiny_controlnet.py) on the CPU: 64x64 pictures, 2 steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studiolo.engines import controlnet as controlnet_module
from studiolo.engines.base import AdapterRef, ControlSpec, EngineError, GenerationRequest, ModelRef
from studiolo.engines.controlnet import ControlNetState, controlnet_for
from studiolo.engines.diffusers_engine import DiffusersEngine
from studiolo.engines.diffusers_entry import module_bytes
from tests.tiny_controlnet import TinyControlNet, make_tiny_controlnet
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyControlNet]:
    root = tmp_path_factory.mktemp("tiny-controlnet")
    pipeline = make_tiny_sd_pipeline(root / "tiny-sd")
    return pipeline, make_tiny_controlnet(root / "controlnet", pipeline)


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine(device="cpu")


def _model(tiny: tuple[Path, TinyControlNet]) -> ModelRef:
    return ModelRef(id="tiny", engine="diffusers", source="folder", path=tiny[0])


def _net(path: Path, net_id: str = "tiny-cn") -> AdapterRef:
    return AdapterRef(id=net_id, kind="controlnet", path=path, format="diffusers", meta={"context_dim": 32})


def _square_map(inset: int = 12) -> Image.Image:
    """A ready control map: a white square outline on black."""
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle([inset, inset, 63 - inset, 63 - inset], outline="white", width=3)
    return image


def _unit(net: AdapterRef, **overrides: Any) -> ControlSpec:
    base = ControlSpec(adapter=net, type="canny", image=_square_map(), preprocess=False)
    return replace(base, **overrides)


def _request(model: ModelRef, **overrides: Any) -> GenerationRequest:
    base = GenerationRequest(model=model, prompt="a red fox", seeds=[3], width=64, height=64, steps=2, guidance=4.0)
    return replace(base, **overrides)


def _pixels(engine: DiffusersEngine, request: GenerationRequest) -> np.ndarray:
    (generated,) = engine.generate(request, lambda s, t, preview=None: None, lambda: False)
    return np.asarray(generated.image, dtype=np.int16)


@pytest.fixture(scope="module")
def plain(engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet]) -> np.ndarray:
    return _pixels(engine, _request(_model(tiny)))


@pytest.fixture(scope="module")
def controlled(engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet]) -> np.ndarray:
    return _pixels(engine, _request(_model(tiny), controls=[_unit(_net(tiny[1].folder))]))


def test_a_unit_that_does_nothing_gives_the_pixels_of_no_control(
    engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet], plain: np.ndarray
) -> None:
    net = _net(tiny[1].folder)
    zero = _pixels(engine, _request(_model(tiny), controls=[_unit(net, strength=0.0)]))
    empty_window = _pixels(engine, _request(_model(tiny), controls=[_unit(net, start=0.5, end=0.5)]))
    assert np.array_equal(zero, plain)
    assert np.array_equal(empty_window, plain)


def test_a_unit_changes_the_picture_and_follows_its_map(
    engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet], plain: np.ndarray, controlled: np.ndarray
) -> None:
    other_map = _pixels(
        engine, _request(_model(tiny), controls=[_unit(_net(tiny[1].folder), image=_square_map(inset=24))])
    )
    assert np.abs(controlled - plain).max() > 8
    assert np.abs(other_map - controlled).max() > 8


def test_batch_equals_single_and_repeats_with_a_unit(
    engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet]
) -> None:
    model, unit = _model(tiny), _unit(_net(tiny[1].folder), strength=0.8, start=0.0, end=0.5)

    def arrays(seeds: list[int]) -> list[tuple[int, Any]]:
        request = _request(model, seeds=seeds, controls=[unit])
        return engine.generate_arrays(request, lambda s, t, preview=None: None, lambda: False)

    batch, alone, again = arrays([1, 2, 3]), arrays([2]), arrays([2])
    assert [seed for seed, _ in batch] == [1, 2, 3]
    assert np.abs(batch[1][1] - alone[0][1]).max() < 1e-4
    assert np.array_equal(alone[0][1], again[0][1])
    assert np.abs(batch[0][1] - batch[1][1]).max() > 0.01  # the seeds still differ


def test_two_units_at_once(
    engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet], plain: np.ndarray, controlled: np.ndarray
) -> None:
    first = _unit(_net(tiny[1].folder))
    second = _unit(_net(tiny[1].ldm_file, "tiny-cn-ldm"), image=_square_map(inset=24), strength=0.7)
    both = _pixels(engine, _request(_model(tiny), controls=[first, second]))
    assert np.abs(both - controlled).max() > 8
    assert np.abs(both - plain).max() > 8
    # A second unit at strength 0 is left out: the job is the one-unit job exactly.
    assert np.array_equal(
        _pixels(engine, _request(_model(tiny), controls=[first, replace(second, strength=0.0)])), controlled
    )


@pytest.mark.parametrize("kind", ["img2img", "inpaint"])
def test_img2img_and_inpaint_with_a_unit(engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet], kind: Any) -> None:
    init, mask = Image.new("RGB", (80, 72), "teal"), Image.new("L", (64, 64), 255)
    request = _request(_model(tiny), kind=kind, init_image=init, mask_image=mask, strength=0.8)
    plain_img2img = _pixels(engine, request)
    with_unit = _pixels(engine, replace(request, controls=[_unit(_net(tiny[1].folder))]))
    assert with_unit.shape == (64, 64, 3)
    assert np.abs(with_unit - plain_img2img).max() > 8


def test_single_files_in_either_layout_load_as_the_folder_does(
    engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet], controlled: np.ndarray
) -> None:
    for path, net_id in ((tiny[1].ldm_file, "tiny-cn-ldm"), (tiny[1].diffusers_file, "tiny-cn-file")):
        assert np.array_equal(_pixels(engine, _request(_model(tiny), controls=[_unit(_net(path, net_id))])), controlled)


def test_the_base_and_each_controlnet_are_loaded_once_and_counted(
    tiny: tuple[Path, TinyControlNet], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = DiffusersEngine(device="cpu")
    base_loads: list[str] = []
    load_pipeline = engine._load_pipeline
    monkeypatch.setattr(engine, "_load_pipeline", lambda model: base_loads.append(model.id) or load_pipeline(model))
    model, net = _model(tiny), _net(tiny[1].folder)
    _pixels(engine, _request(model))
    plain_bytes = engine.loaded_bytes()
    for _ in range(2):
        _pixels(engine, _request(model, controls=[_unit(net)]))
    entry = engine._cache["tiny"]
    state = entry.extras["controlnet"]
    assert isinstance(state, ControlNetState)
    assert base_loads == ["tiny"] and state.loads == 1
    assert entry.extra_bytes["controlnet"] == module_bytes(*state.nets.values()) > 0
    assert engine.loaded_bytes() == plain_bytes + entry.extra_bytes["controlnet"]
    # Past the bound, the least recently used ControlNet and the pipelines built with it are dropped.
    monkeypatch.setattr(controlnet_module, "MAX_CONTROLNETS", 1)
    controlnet_for(entry, _net(tiny[1].diffusers_file, "tiny-cn-file"))
    assert state.loads == 2 and len(state.nets) == 1 and not state.pipes
    assert entry.extra_bytes["controlnet"] == module_bytes(*state.nets.values())


def test_a_depth_unit_without_a_preprocessor_fails_clearly(
    engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet]
) -> None:
    unit = _unit(_net(tiny[1].folder), type="depth", preprocess=True)
    with pytest.raises(EngineError) as caught:
        _pixels(engine, _request(_model(tiny), controls=[unit]))
    assert caught.value.code == "preprocessor_unavailable"


def test_a_damaged_controlnet_file_is_model_file_corrupt(
    engine: DiffusersEngine, tiny: tuple[Path, TinyControlNet], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny[1].ldm_file.read_bytes()[:5000])
    with pytest.raises(EngineError) as caught:
        _pixels(engine, _request(_model(tiny), controls=[_unit(_net(broken, "broken"))]))
    assert caught.value.code == "model_file_corrupt"
