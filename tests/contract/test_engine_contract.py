"""The contract every Engine adapter passes (engines/base.py).

Each adapter is described by an ``EngineCase``: the engine, a model that supports every job kind the engine
offers, and a "limited" model that lacks at least one kind (to check unsupported kinds are refused). To add an
adapter, write a case factory and append it to ADAPTERS. Engine-specific behaviour is tested in
tests/unit/test_<engine>.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from studiolo.engines.base import (
    Capabilities,
    Engine,
    EngineError,
    GenerationCanceled,
    GenerationRequest,
    JobKind,
    ModelRef,
    Preview,
)
from studiolo.engines.demo.engine import DemoEngine, weights_available
from studiolo.engines.echo import EchoEngine
from tests.tiny_demo import make_tiny_demo_weights
from tests.tiny_pipeline import make_tiny_sd_pipeline

KINDS: tuple[JobKind, ...] = ("txt2img", "img2img", "inpaint")
# diffusers' schedulers trip numpy 2 deprecation warnings inside diffusers itself; keep them from failing
# runs with ``-W error`` (a mark outranks the command line), while every other warning still counts.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@dataclass(frozen=True)
class EngineCase:
    engine: Engine
    model: ModelRef
    limited_engine: Engine
    limited_model: ModelRef


def _echo_case(tmp: Path) -> EngineCase:
    limited = EchoEngine(capabilities=Capabilities(txt2img=True, img2img=False, inpaint=False))
    return EngineCase(
        engine=EchoEngine(),
        model=ModelRef(id="echo", engine="echo", source="builtin"),
        limited_engine=limited,
        limited_model=ModelRef(id="echo-limited", engine="echo", source="builtin"),
    )


def _diffusers_case(tmp: Path) -> EngineCase:
    from studiolo.engines.diffusers_engine import DiffusersEngine

    engine = DiffusersEngine(device="cpu")
    full = make_tiny_sd_pipeline(tmp / "tiny", seed=0)
    inpaint_only = make_tiny_sd_pipeline(tmp / "tiny-inpaint", seed=1, inpaint=True)
    return EngineCase(
        engine=engine,
        model=ModelRef(id="tiny", engine="diffusers", source="folder", path=full),
        limited_engine=engine,
        limited_model=ModelRef(id="tiny-inpaint", engine="diffusers", source="folder", path=inpaint_only),
    )


def _demo_tiny_case(tmp: Path) -> EngineCase:
    # txt2img only, so the demo engine is its own "limited" case.
    engine = DemoEngine(weights=make_tiny_demo_weights(tmp / "demo"))
    model = ModelRef(id="studiolo-demo", engine="demo", source="builtin")
    return EngineCase(engine=engine, model=model, limited_engine=engine, limited_model=model)


def _demo_case(tmp: Path) -> EngineCase:
    engine = DemoEngine()
    model = ModelRef(id="studiolo-demo", engine="demo", source="builtin")
    return EngineCase(engine=engine, model=model, limited_engine=engine, limited_model=model)


ADAPTERS = [
    pytest.param(_echo_case, id="echo"),
    pytest.param(_diffusers_case, id="diffusers"),
    pytest.param(_demo_tiny_case, id="demo-tiny"),
    # The trained weights ship in the package; a checkout that has not exported them yet still runs demo-tiny.
    *([pytest.param(_demo_case, id="demo")] if weights_available() else []),
]


@pytest.fixture(scope="module", params=ADAPTERS)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> EngineCase:
    factory: Callable[[Path], EngineCase] = request.param
    return factory(tmp_path_factory.mktemp("engine"))


def _request(model: ModelRef, **overrides: Any) -> GenerationRequest:
    base = GenerationRequest(
        model=model,
        prompt="a lighthouse at dusk",
        seeds=[11],
        width=64,
        height=48,
        steps=2,
        guidance=5.0,
        init_image=Image.new("RGB", (80, 60), (200, 120, 40)),
        mask_image=_half_mask(64, 48),
    )
    return replace(base, **overrides)


def _half_mask(width: int, height: int) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 2, 0, width, height))
    return mask


def _run(engine: Engine, request: GenerationRequest) -> list[np.ndarray]:
    images = engine.generate(request, lambda step, total, preview=None: None, lambda: False)
    return [np.asarray(g.image, dtype=np.int16) for g in images]


def _supported(case: EngineCase) -> list[JobKind]:
    caps = case.engine.capabilities(case.model)
    return [k for k in KINDS if caps.supports(k)]


def test_adapter_is_an_engine(case: EngineCase) -> None:
    assert isinstance(case.engine, Engine)
    assert isinstance(case.engine.name, str) and case.engine.name


def test_returns_one_rgb_image_per_seed_in_seed_order(case: EngineCase) -> None:
    seeds = [5, 900, 3]
    images = case.engine.generate(_request(case.model, seeds=seeds), lambda s, t, preview=None: None, lambda: False)
    assert [g.seed for g in images] == seeds
    for generated in images:
        assert generated.image.mode == "RGB"
        assert generated.image.size == (64, 48)  # (width, height): catches a swapped size
        assert generated.sampler is None or isinstance(generated.sampler, str)


def test_same_seed_gives_identical_pixels(case: EngineCase) -> None:
    first = _run(case.engine, _request(case.model, seeds=[7]))
    second = _run(case.engine, _request(case.model, seeds=[7]))
    assert np.array_equal(first[0], second[0])


def test_different_seeds_give_different_images(case: EngineCase) -> None:
    a, b = _run(case.engine, _request(case.model, seeds=[1, 2]))
    assert not np.array_equal(a, b)


def test_different_prompts_give_different_images(case: EngineCase) -> None:
    (a,) = _run(case.engine, _request(case.model, prompt="red"))
    (b,) = _run(case.engine, _request(case.model, prompt="a completely different prompt"))
    assert not np.array_equal(a, b)


def test_image_k_of_a_batch_equals_the_same_seed_alone(case: EngineCase) -> None:
    for kind in _supported(case):
        batch = _run(case.engine, _request(case.model, kind=kind, seeds=[1, 2, 3]))
        alone = _run(case.engine, _request(case.model, kind=kind, seeds=[2]))
        # Identical up to float rounding: batched maths may round differently, which can flip a pixel by one
        # 8-bit step (engines test their float output more strictly in their own unit tests).
        diff = np.abs(batch[1] - alone[0])
        assert diff.max() <= 1, kind
        assert (diff > 0).mean() < 0.01, kind


def test_on_step_reports_every_step_in_order_ending_at_total(case: EngineCase) -> None:
    calls: list[tuple[int, int]] = []
    case.engine.generate(_request(case.model, steps=3), lambda s, t, preview=None: calls.append((s, t)), lambda: False)
    assert calls, "on_step was never called"
    total = calls[-1][1]
    assert [s for s, _ in calls] == list(range(1, total + 1))
    assert all(t == total for _, t in calls)
    assert total >= 3


def _collect_previews(engine: Engine, request: GenerationRequest) -> tuple[list[tuple[int, Image.Image]], list[Any]]:
    """Run ``request`` drawing every preview offered; returns ((step, preview) pairs, the images)."""
    previews: list[tuple[int, Image.Image]] = []

    def on_step(step: int, total: int, preview: Preview | None = None) -> None:
        image = preview() if callable(preview) else preview
        if image is not None:
            previews.append((step, image))

    images = engine.generate(request, on_step, lambda: False)
    return previews, [np.asarray(g.image, dtype=np.int16) for g in images]


def test_previews_if_sent_are_small_rgb_pictures_of_the_request(case: EngineCase) -> None:
    request = _request(case.model, steps=3, seeds=[4, 5])  # 64x48
    previews, _images = _collect_previews(case.engine, request)
    for step, image in previews:
        assert isinstance(image, Image.Image) and image.mode == "RGB", step
        width, height = image.size
        # Never larger than the image itself, and of its shape (a latent preview may be much smaller).
        assert 1 <= width <= 64 and 1 <= height <= 48, image.size
        assert abs(width / height - 64 / 48) < 0.2, image.size


def test_drawing_previews_does_not_change_the_images(case: EngineCase) -> None:
    request = _request(case.model, steps=3, seeds=[4, 5])
    _previews, with_previews = _collect_previews(case.engine, request)
    without = _run(case.engine, request)
    assert all(np.array_equal(a, b) for a, b in zip(with_previews, without, strict=True))


def test_cancel_before_start_raises(case: EngineCase) -> None:
    with pytest.raises(GenerationCanceled):
        case.engine.generate(_request(case.model, steps=3), lambda s, t, preview=None: None, lambda: True)


def test_cancel_is_checked_at_every_step_end(case: EngineCase) -> None:
    calls: list[int] = []
    with pytest.raises(GenerationCanceled):
        case.engine.generate(
            _request(case.model, steps=4),
            lambda s, t, preview=None: calls.append(s),
            lambda: len(calls) >= 1,  # turns true once the first step has finished
        )
    assert calls == [1]


@pytest.mark.parametrize("limited", [False, True], ids=["full", "limited"])
@pytest.mark.parametrize("kind", KINDS)
def test_capabilities_are_honoured(case: EngineCase, kind: JobKind, limited: bool) -> None:
    engine, model = (case.limited_engine, case.limited_model) if limited else (case.engine, case.model)
    caps = engine.capabilities(model)
    if caps.supports(kind):
        images = engine.generate(_request(model, kind=kind), lambda s, t, preview=None: None, lambda: False)
        assert len(images) == 1 and images[0].image.size == (64, 48)
    else:
        with pytest.raises(EngineError) as excinfo:
            engine.generate(_request(model, kind=kind), lambda s, t, preview=None: None, lambda: False)
        assert excinfo.value.code == "unsupported_task"
    # Capabilities do not change once the model has been used.
    assert engine.capabilities(model) == caps


def test_limited_model_really_lacks_a_kind(case: EngineCase) -> None:
    caps = case.limited_engine.capabilities(case.limited_model)
    assert not all(caps.supports(k) for k in KINDS)


def test_model_is_loaded_after_load_and_generate(case: EngineCase) -> None:
    case.engine.load(case.model)
    assert case.engine.is_loaded(case.model.id)
    case.engine.generate(_request(case.model), lambda s, t, preview=None: None, lambda: False)
    assert case.engine.is_loaded(case.model.id)
    assert not case.engine.is_loaded("no-such-model")
