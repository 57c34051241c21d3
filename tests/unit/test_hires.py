"""Hires fix on the diffusers engine (engines/hires.py), with the tiny random pipeline on the CPU: sampled small,
enlarged (Lanczos, latents, or an upscaler model), sampled again as img2img at the final size."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from studiolo.engines.base import (
    EngineError,
    GenerationCanceled,
    GenerationRequest,
    HiresSpec,
    ModelRef,
    Preview,
)
from studiolo.engines.diffusers_engine import DiffusersEngine
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine(device="cpu")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    path = make_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sd")
    return ModelRef(id="tiny", engine="diffusers", source="folder", path=path)


HIRES = HiresSpec(scale=2.0, upscaler="lanczos", strength=0.5, steps=2)


def _request(model: ModelRef, hires: HiresSpec | None = HIRES, **overrides: Any) -> GenerationRequest:
    base = GenerationRequest(
        model=model,
        prompt="a lighthouse at dusk",
        seeds=[7],
        width=64,
        height=64,
        steps=2,
        guidance=4.0,
        sampler="euler",
        hires=hires,
    )
    return replace(base, **overrides)


def _ignore(step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
    pass


def _eight_bit(array: np.ndarray) -> np.ndarray:
    return (array * 255).round().astype(np.int16)


def _arrays(engine: DiffusersEngine, request: GenerationRequest) -> list[np.ndarray]:
    return [array for _seed, array in engine.generate_arrays(request, _ignore, lambda: False)]


def test_the_image_has_the_final_size_and_is_deterministic(engine: DiffusersEngine, model: ModelRef) -> None:
    (image,) = engine.generate(_request(model), _ignore, lambda: False)
    assert image.image.size == (128, 128) and image.seed == 7 and image.sampler == "euler"
    first = _arrays(engine, _request(model))
    again = _arrays(engine, _request(model))
    assert first[0].shape == (128, 128, 3) and first[0].dtype == np.float32
    assert np.array_equal(first[0], again[0])
    odd = _arrays(engine, _request(model, width=64, height=48, hires=HiresSpec(scale=1.5, strength=0.5, steps=2)))
    assert odd[0].shape == (72, 96, 3)  # 48 * 1.5 = 72, 64 * 1.5 = 96 (multiples of 8)


@pytest.mark.parametrize("upscaler", ["lanczos", "latent"])
def test_each_image_of_a_batch_equals_its_seed_alone(engine: DiffusersEngine, model: ModelRef, upscaler: str) -> None:
    hires = HiresSpec(scale=2.0, upscaler=upscaler, strength=0.6, steps=2)
    batch = engine.generate_arrays(_request(model, hires, seeds=[1, 2, 3]), _ignore, lambda: False)
    alone = engine.generate_arrays(_request(model, hires, seeds=[2]), _ignore, lambda: False)
    assert [seed for seed, _ in batch] == [1, 2, 3]
    diff = np.abs(batch[1][1] - alone[0][1])
    if upscaler == "latent":
        assert diff.max() < 1e-4
    else:
        # The Lanczos path rounds the first pass to 8 bits: a float-rounding difference there can flip a value by
        # one step (1/255), which the second pass carries on, much damped. The 8-bit result is what counts.
        assert diff.max() < 2e-3
        assert np.abs(_eight_bit(batch[1][1]) - _eight_bit(alone[0][1])).max() <= 1
    # Each image starts its second pass from its own first-pass picture, not the first image's.
    assert np.abs(batch[0][1] - batch[1][1]).max() > 0.05


def test_upscaler_and_strength_change_the_result(engine: DiffusersEngine, model: ModelRef) -> None:
    lanczos = _arrays(engine, _request(model, HiresSpec(upscaler="lanczos", strength=0.5, steps=2)))[0]
    latent = _arrays(engine, _request(model, HiresSpec(upscaler="latent", strength=0.5, steps=2)))[0]
    stronger = _arrays(engine, _request(model, HiresSpec(upscaler="lanczos", strength=0.9, steps=2)))[0]
    assert np.abs(lanczos - latent).mean() > 0.01
    assert np.abs(lanczos - stronger).mean() > 0.01
    # The second pass changes the enlarged picture (it is not a plain upscale of the first pass).
    small = _arrays(engine, _request(model, hires=None))[0]
    plain = np.asarray(
        Image.fromarray((small * 255).round().astype(np.uint8)).resize((128, 128), Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    assert small.shape == (64, 64, 3) and np.abs(lanczos * 255 - plain).mean() > 2


def test_an_upscaler_model_enlarges_the_first_pass(engine: DiffusersEngine, model: ModelRef) -> None:
    calls: list[tuple[list[tuple[int, int]], int, int]] = []

    def nearest_x4(images: list[Image.Image], width: int, height: int) -> list[Image.Image]:
        # What a model upscaler gives: its own fixed factor (x4), not the asked size; the engine brings it there.
        calls.append(([im.size for im in images], width, height))
        return [im.resize((im.width * 4, im.height * 4), Image.Resampling.NEAREST) for im in images]

    hires = HiresSpec(upscaler="x4-model", strength=0.5, steps=2, upscale=nearest_x4)
    modelled = _arrays(engine, _request(model, hires, seeds=[7, 8]))
    assert calls == [([(64, 64), (64, 64)], 128, 128)]
    assert modelled[0].shape == (128, 128, 3)
    lanczos = _arrays(engine, _request(model, replace(hires, upscaler="lanczos", upscale=None)))
    assert np.abs(modelled[0] - lanczos[0]).mean() > 0.001
    with pytest.raises(EngineError) as info:
        engine.generate(_request(model, replace(hires, upscale=None)), _ignore, lambda: False)
    assert info.value.code == "unknown_upscaler"


def test_progress_counts_both_passes_once(engine: DiffusersEngine, model: ModelRef) -> None:
    calls: list[tuple[int, int, int]] = []
    previews: list[Image.Image] = []

    def on_step(step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
        calls.append((image, step, total))
        picture = preview() if callable(preview) else preview
        if picture is not None:
            previews.append(picture)

    for sampler, hires_steps in (("euler", 3), (None, 0), ("heun", 2)):
        calls.clear()
        request = _request(model, HiresSpec(strength=0.4, steps=hires_steps), sampler=sampler, steps=3)
        engine.generate(request, on_step, lambda: False)
        total = calls[-1][2]
        assert calls == [(0, step, total) for step in range(1, total + 1)], sampler
    assert previews and previews[-1].size[0] > previews[0].size[0]  # the second pass's previews are larger


def test_cancel_during_the_second_pass(engine: DiffusersEngine, model: ModelRef) -> None:
    calls: list[tuple[int, int]] = []
    request = _request(model, HiresSpec(strength=0.5, steps=3), steps=2)
    with pytest.raises(GenerationCanceled):
        engine.generate(request, lambda s, t, **_: calls.append((s, t)), lambda: len(calls) >= 4)
    # Step 4 of 2 + 3 is the second pass's second step: it stopped there.
    assert calls[-1] == (4, 5)
    first_pass: list[int] = []
    with pytest.raises(GenerationCanceled):
        engine.generate(request, lambda s, t, **_: first_pass.append(s), lambda: len(first_pass) >= 1)
    assert first_pass == [1]


def test_what_hires_cannot_do_is_refused(engine: DiffusersEngine, model: ModelRef) -> None:
    cases = [
        (_request(model, kind="img2img", init_image=Image.new("RGB", (64, 64), "navy")), "hires_unsupported"),
        (_request(model, HiresSpec(strength=0.0)), "invalid_request"),
        (_request(model, HiresSpec(scale=64.0), width=512, height=512), "invalid_request"),
    ]
    for request, code in cases:
        with pytest.raises(EngineError) as info:
            engine.generate(request, _ignore, lambda: False)
        assert info.value.code == code
