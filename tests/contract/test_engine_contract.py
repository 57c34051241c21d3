"""The contract every Engine adapter passes (engines/base.py).

Each adapter is described by an ``EngineCase``: the engine, a model that supports every job kind the engine
offers, and, where the adapter has one, a "limited" model that lacks at least one kind (to check unsupported kinds
are refused). To add an adapter, write a case factory and append it to ADAPTERS (and to LIMITED_ADAPTERS if it has
a limited model). Every job kind a model claims (img2img, inpaint) is held to the same checks as txt2img: seed
determinism, batch = single seed, output size, and for inpainting the kept region. Engine-specific behaviour is
tested in tests/unit/test_<engine>.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from studiolo.engines.accel.openvino_modules import openvino_available
from studiolo.engines.accel.plan import CpuAccel
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
    limited_engine: Engine | None = None
    limited_model: ModelRef | None = None
    # The accelerated CPU path the engine was asked for (issue 20); None for engines without one.
    path: str | None = None


def _echo_case(tmp: Path) -> EngineCase:
    limited = EchoEngine(capabilities=Capabilities(txt2img=True, img2img=False, inpaint=False))
    return EngineCase(
        engine=EchoEngine(),
        model=ModelRef(id="echo", engine="echo", source="builtin"),
        limited_engine=limited,
        limited_model=ModelRef(id="echo-limited", engine="echo", source="builtin"),
    )


def _diffusers_case(tmp: Path, cpu_accel: CpuAccel = "off") -> EngineCase:
    from studiolo.engines.diffusers_engine import DiffusersEngine

    engine = DiffusersEngine(device="cpu", cpu_accel=cpu_accel, accel_cache_dir=tmp / "accel-cache")
    full = make_tiny_sd_pipeline(tmp / "tiny", seed=0)
    inpaint_only = make_tiny_sd_pipeline(tmp / "tiny-inpaint", seed=1, inpaint=True)
    return EngineCase(
        engine=engine,
        model=ModelRef(id="tiny", engine="diffusers", source="folder", path=full),
        limited_engine=engine,
        limited_model=ModelRef(id="tiny-inpaint", engine="diffusers", source="folder", path=inpaint_only),
    )


def _accelerated_case(cpu_accel: CpuAccel) -> Callable[[Path], EngineCase]:
    """The diffusers engine on one accelerated CPU path (issue 20), with the tiny models of ``_diffusers_case``.

    The tiny SD model passes the quality gate on both paths (measured: PSNR 54 dB), so the engine really runs it
    on that path (``test_accelerated_cases_run_on_their_path``). The inpaint-only model has no accelerated path
    (an inpainting pipeline class) and runs fp32 as loaded, which the limited case checks too.
    """

    def factory(tmp: Path) -> EngineCase:
        return _diffusers_case(tmp, cpu_accel)

    return factory


# The OpenVINO path exists only where the package is installed (it is a dependency here, so it runs here).
ACCELERATED = [
    *([pytest.param(_accelerated_case("openvino"), id="diffusers-openvino")] if openvino_available() else []),
    pytest.param(_accelerated_case("bf16"), id="diffusers-bf16"),
]


def _demo_tiny_case(tmp: Path) -> EngineCase:
    # Every kind, and no model of it lacks one: no limited case.
    engine = DemoEngine(weights=make_tiny_demo_weights(tmp / "demo"))
    return EngineCase(engine=engine, model=ModelRef(id="studiolo-demo", engine="demo", source="builtin"))


def _demo_case(tmp: Path) -> EngineCase:
    return EngineCase(engine=DemoEngine(), model=ModelRef(id="studiolo-demo", engine="demo", source="builtin"))


ADAPTERS = [
    pytest.param(_echo_case, id="echo"),
    pytest.param(_diffusers_case, id="diffusers"),
    *ACCELERATED,
    pytest.param(_demo_tiny_case, id="demo-tiny"),
    # The trained weights ship in the package; a checkout that has not exported them yet still runs demo-tiny.
    *([pytest.param(_demo_case, id="demo")] if weights_available() else []),
]


LIMITED_ADAPTERS = [pytest.param(_echo_case, id="echo"), pytest.param(_diffusers_case, id="diffusers"), *ACCELERATED]


@pytest.fixture(scope="module", params=ADAPTERS)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> EngineCase:
    factory: Callable[[Path], EngineCase] = request.param
    return factory(tmp_path_factory.mktemp("engine"))


@pytest.fixture(scope="module", params=LIMITED_ADAPTERS)
def limited_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> EngineCase:
    factory: Callable[[Path], EngineCase] = request.param
    made = factory(tmp_path_factory.mktemp("engine-limited"))
    assert made.limited_engine is not None and made.limited_model is not None
    return made


def _ignore(step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
    """An on_step that takes everything the contract lets an engine pass."""


def _request(model: ModelRef, **overrides: Any) -> GenerationRequest:
    base = GenerationRequest(
        model=model,
        prompt="a lighthouse at dusk",
        seeds=[11],
        width=64,
        height=48,
        steps=2,
        guidance=5.0,
        init_image=_init_image(80, 60),
        mask_image=_half_mask(64, 48),
    )
    return replace(base, **overrides)


def _init_image(width: int, height: int) -> Image.Image:
    """A picture with structure (a gradient and a bright disc), so a kept region can be told from a repainted one."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([200 * xs / width + 20, 120 + 0 * xs, 220 * ys / height + 10], axis=-1)
    pixels[(xs - width / 4) ** 2 + (ys - height / 2) ** 2 < (height / 4) ** 2] = (250, 240, 90)
    return Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8), "RGB")


def _half_mask(width: int, height: int) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 2, 0, width, height))
    return mask


def _run(engine: Engine, request: GenerationRequest) -> list[np.ndarray]:
    images = engine.generate(request, _ignore, lambda: False)
    return [np.asarray(g.image, dtype=np.int16) for g in images]


def _supported(case: EngineCase) -> list[JobKind]:
    caps = case.engine.capabilities(case.model)
    return [k for k in KINDS if caps.supports(k)]


def test_adapter_is_an_engine(case: EngineCase) -> None:
    assert isinstance(case.engine, Engine)
    assert isinstance(case.engine.name, str) and case.engine.name


def test_returns_one_rgb_image_per_seed_in_seed_order(case: EngineCase) -> None:
    seeds = [5, 900, 3]
    images = case.engine.generate(_request(case.model, seeds=seeds), _ignore, lambda: False)
    assert [g.seed for g in images] == seeds
    for generated in images:
        assert generated.image.mode == "RGB"
        assert generated.image.size == (64, 48)  # (width, height): catches a swapped size
        assert generated.sampler is None or isinstance(generated.sampler, str)


def test_same_seed_gives_identical_pixels(case: EngineCase) -> None:
    for kind in _supported(case):
        first = _run(case.engine, _request(case.model, kind=kind, seeds=[7]))
        second = _run(case.engine, _request(case.model, kind=kind, seeds=[7]))
        assert np.array_equal(first[0], second[0]), kind


@pytest.mark.parametrize("kind", ["img2img", "inpaint"])
def test_image_to_image_outputs_have_the_requested_size_whatever_the_init_size(case: EngineCase, kind: JobKind) -> None:
    if not case.engine.capabilities(case.model).supports(kind):
        return  # test_capabilities_are_honoured checks the refusal
    # A tall init and a mask of yet another size, for a wide request: both are fitted to the request.
    request = _request(
        case.model, kind=kind, seeds=[3, 4], init_image=_init_image(40, 96), mask_image=_half_mask(32, 32)
    )
    for generated in case.engine.generate(request, _ignore, lambda: False):
        assert generated.image.mode == "RGB" and generated.image.size == (64, 48), kind


def test_inpainting_keeps_the_unmasked_region_and_repaints_the_masked_one(case: EngineCase) -> None:
    """White = repaint, black = keep (the API's and diffusers' convention). Every engine puts the init image's own
    pixels back where the mask is black, so the kept half matches it to 8-bit rounding (measured: 0.0 mean for
    echo, diffusers and demo); the repainted half moves well away (measured 57-110 mean). A swapped or ignored mask
    fails both."""
    if not case.engine.capabilities(case.model).supports("inpaint"):
        return
    init = np.asarray(_init_image(64, 48), dtype=np.int16)
    for seed in (5, 6):
        request = _request(case.model, kind="inpaint", seeds=[seed], strength=1.0, init_image=_init_image(64, 48))
        (out,) = _run(case.engine, request)
        kept = np.abs(out[:, :30] - init[:, :30]).mean()  # left of the mask's edge (x = 32), away from it
        repainted = np.abs(out[:, 34:] - init[:, 34:]).mean()
        assert kept <= 1.0, (seed, kept)
        assert repainted >= 8.0, (seed, repainted)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float rounding (slerp at its ends, batched maths): at most 2 levels off, on under 2% of values."""
    diff = np.abs(a - b)
    return bool(diff.max() <= 2 and (diff > 0).mean() < 0.02)


def test_variation_seed_walks_from_the_seed_to_the_variation_seed(case: EngineCase) -> None:
    """A1111's subseed: strength 0 is the seed's picture, 1 the variation seed's (as the seed), between differs."""
    caps = case.engine.capabilities(case.model)
    for kind in caps.variation_kinds:
        (base,) = _run(case.engine, _request(case.model, kind=kind, seeds=[21], strength=1.0))
        (other,) = _run(case.engine, _request(case.model, kind=kind, seeds=[99], strength=1.0))

        def varied(strength: float, kind: JobKind = kind) -> np.ndarray:
            request = _request(case.model, kind=kind, seeds=[21], strength=1.0, variation_strength=strength)
            return _run(case.engine, replace(request, variation_seeds=[99]))[0]

        assert np.array_equal(varied(0.0), base), kind
        assert _close(varied(1.0), other), kind
        middle = varied(0.5)
        assert not _close(middle, base) and not _close(middle, other), kind


def test_variation_seed_of_image_k_equals_the_same_seeds_alone(case: EngineCase) -> None:
    for kind in case.engine.capabilities(case.model).variation_kinds:
        batch = _request(case.model, kind=kind, seeds=[4, 5, 6], variation_strength=0.4, variation_seeds=[70, 71, 72])
        alone = _request(case.model, kind=kind, seeds=[5], variation_strength=0.4, variation_seeds=[71])
        assert _close(_run(case.engine, batch)[1], _run(case.engine, alone)[0]), kind


def test_progress_counts_the_steps_of_each_sampling_call(case: EngineCase) -> None:
    """Per CONTRACTS.md "Progress": either every image is sampled in one call (image = 0: steps 1..total once), or
    one after another (image = 1..n, steps 1..total for each, in order)."""
    calls: list[tuple[int, int, int]] = []

    def on_step(step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
        calls.append((image, step, total))

    case.engine.generate(_request(case.model, seeds=[1, 2, 3], steps=3), on_step, lambda: False)
    images = sorted({image for image, _s, _t in calls})
    total = calls[-1][2]
    if images == [0]:
        assert calls == [(0, step, total) for step in range(1, total + 1)]
    else:
        assert images == [1, 2, 3]
        assert calls == [(image, step, total) for image in (1, 2, 3) for step in range(1, total + 1)]


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
    case.engine.generate(_request(case.model, steps=3), lambda s, t, **_: calls.append((s, t)), lambda: False)
    assert calls, "on_step was never called"
    total = calls[-1][1]
    assert [s for s, _ in calls] == list(range(1, total + 1))
    assert all(t == total for _, t in calls)
    assert total >= 3


def _collect_previews(engine: Engine, request: GenerationRequest) -> tuple[list[tuple[int, Image.Image]], list[Any]]:
    """Run ``request`` drawing every preview offered; returns ((step, preview) pairs, the images)."""
    previews: list[tuple[int, Image.Image]] = []

    def on_step(step: int, total: int, preview: Preview | None = None, **_: Any) -> None:
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
        case.engine.generate(_request(case.model, steps=3), _ignore, lambda: True)


def test_cancel_is_checked_at_every_step_end(case: EngineCase) -> None:
    calls: list[int] = []
    with pytest.raises(GenerationCanceled):
        case.engine.generate(
            _request(case.model, steps=4),
            lambda s, t, **_: calls.append(s),
            lambda: len(calls) >= 1,  # turns true once the first step has finished
        )
    assert calls == [1]


def _honours_capabilities(engine: Engine, model: ModelRef, kind: JobKind) -> None:
    caps = engine.capabilities(model)
    if caps.supports(kind):
        images = engine.generate(_request(model, kind=kind), _ignore, lambda: False)
        assert len(images) == 1 and images[0].image.size == (64, 48)
    else:
        with pytest.raises(EngineError) as excinfo:
            engine.generate(_request(model, kind=kind), _ignore, lambda: False)
        assert excinfo.value.code == "unsupported_task"
    # Capabilities do not change once the model has been used.
    assert engine.capabilities(model) == caps


@pytest.mark.parametrize("kind", KINDS)
def test_capabilities_are_honoured(case: EngineCase, kind: JobKind) -> None:
    _honours_capabilities(case.engine, case.model, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_capabilities_of_a_limited_model_are_honoured(limited_case: EngineCase, kind: JobKind) -> None:
    assert limited_case.limited_engine is not None and limited_case.limited_model is not None
    _honours_capabilities(limited_case.limited_engine, limited_case.limited_model, kind)


def test_capabilities_name_what_a_request_may_choose(case: EngineCase) -> None:
    caps = case.engine.capabilities(case.model)
    assert caps.txt2img or caps.img2img or caps.inpaint
    assert all(isinstance(name, str) and name for name in (*caps.samplers, *caps.schedulers))
    assert "automatic" not in caps.schedulers  # always allowed, never listed
    assert set(caps.variation_kinds) <= {k for k in KINDS if caps.supports(k)}


def test_limited_model_really_lacks_a_kind(limited_case: EngineCase) -> None:
    assert limited_case.limited_engine is not None and limited_case.limited_model is not None
    caps = limited_case.limited_engine.capabilities(limited_case.limited_model)
    assert not all(caps.supports(k) for k in KINDS)


def test_model_is_loaded_after_load_and_generate(case: EngineCase) -> None:
    case.engine.load(case.model)
    assert case.engine.is_loaded(case.model.id)
    case.engine.generate(_request(case.model), _ignore, lambda: False)
    assert case.engine.is_loaded(case.model.id)
    assert not case.engine.is_loaded("no-such-model")


def _accel_path(engine: Engine, model: ModelRef) -> tuple[str, bool]:
    """The CPU path the diffusers engine loaded ``model`` on, and whether it passed the quality gate (or ran none)."""
    from studiolo.engines.diffusers_engine import DiffusersEngine

    assert isinstance(engine, DiffusersEngine)
    engine.load(model)
    accel = engine._cache[model.id].accel
    return str(accel.path), accel.quality is None or accel.quality.passed


def test_accelerated_cases_run_on_their_path(case: EngineCase) -> None:
    """The accelerated cases hold the contract on the path they name, not on an fp32 fallback: the tiny model passes
    the quality gate, so the forced path is the one it runs on (a forced path that failed would still run, with a
    warning: tests/unit/test_cpu_accel.py)."""
    if case.path is not None:
        assert _accel_path(case.engine, case.model) == (case.path, True)


def test_a_limited_model_without_an_accelerated_path_runs_as_loaded(limited_case: EngineCase) -> None:
    if limited_case.path is not None:
        assert limited_case.limited_engine is not None and limited_case.limited_model is not None
        assert _accel_path(limited_case.limited_engine, limited_case.limited_model) == ("fp32", True)
