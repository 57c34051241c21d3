"""The demo model's image-to-image, inpainting and variation seeds, on its trained weights (issue 14).

The shared checks (determinism, batch = single seed, sizes, the kept region) run on every engine in
tests/contract/test_engine_contract.py; these are the demo model's own promises: strength 0 returns the init image,
strength 1 ignores it, strengths between move away from it step by step, the mask's white is what is repainted, and
the variation seed walks from one seed's picture to another's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from studiolo.engines.base import GenerationRequest, ModelRef
from studiolo.engines.demo.engine import DemoEngine
from studiolo.engines.demo.inputs import init_to_model, mask_to_model

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
]

MODEL = ModelRef(id="studiolo-demo", engine="demo", source="builtin")
W, H = 192, 128  # not square: the init image and mask go through the model's square and back


@pytest.fixture(scope="module")
def engine() -> DemoEngine:
    return DemoEngine()


@pytest.fixture(scope="module")
def init(engine: DemoEngine) -> Image.Image:
    """A picture the model drew itself: a lighthouse at dusk."""
    request = GenerationRequest(model=MODEL, prompt="a lighthouse at dusk by the sea", seeds=[3], width=W, height=H)
    return engine.generate(request, lambda s, t, **_: None, lambda: False)[0].image


def _run(engine: DemoEngine, init: Image.Image, **overrides: Any) -> list[np.ndarray]:
    request = GenerationRequest(
        model=MODEL,
        prompt="a red house in a forest at noon",
        seeds=[5],
        width=W,
        height=H,
        steps=8,
        guidance=4.0,
        kind="img2img",
        init_image=init,
    )
    request = replace(request, **overrides)
    return [
        np.asarray(g.image, dtype=np.float32) for g in engine.generate(request, lambda s, t, **_: None, lambda: False)
    ]


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_strength_moves_away_from_the_init_image_step_by_step(engine: DemoEngine, init: Image.Image) -> None:
    start = np.asarray(init, dtype=np.float32)
    distances = [_mean_diff(_run(engine, init, strength=s)[0], start) for s in (0.0, 0.3, 0.6, 1.0)]
    assert distances[0] == 0.0  # strength 0: the init image itself, at full resolution
    assert distances == sorted(distances) and distances[1] > 5.0, distances


def test_strength_1_ignores_the_init_image(engine: DemoEngine, init: Image.Image) -> None:
    grey = Image.new("RGB", (50, 90), (128, 128, 128))
    assert np.array_equal(_run(engine, init, strength=1.0)[0], _run(engine, grey, strength=1.0)[0])
    # ... and is the txt2img picture of the same seed and prompt.
    assert np.array_equal(_run(engine, init, strength=1.0)[0], _run(engine, init, kind="txt2img")[0])


def test_vary_subtle_stays_nearer_than_vary_strong(engine: DemoEngine, init: Image.Image) -> None:
    # "Vary (subtle)": the same prompt, a new seed, strength 0.35 stays much nearer the picture than a new one.
    start = np.asarray(init, dtype=np.float32)
    prompt = "a lighthouse at dusk by the sea"
    other = _run(engine, init, prompt=prompt, kind="txt2img", seeds=[8])[0]
    gentle = _run(engine, init, prompt=prompt, seeds=[8], strength=0.35)[0]
    strong = _run(engine, init, prompt=prompt, seeds=[8], strength=0.7)[0]
    assert 0 < _mean_diff(gentle, start) < _mean_diff(strong, start) < _mean_diff(other, start)


def test_inpainting_repaints_only_the_white_of_the_mask(engine: DemoEngine, init: Image.Image) -> None:
    start = np.asarray(init, dtype=np.float32)
    mask = Image.new("L", (96, 64), 0)  # half the request's size: resized to it
    mask.paste(255, (24, 16, 72, 48))  # the middle quarter
    (out,) = _run(engine, init, kind="inpaint", strength=1.0, mask_image=mask)
    painted = np.zeros((H, W), dtype=bool)
    painted[32:96, 48:144] = True
    edge = np.zeros((H, W), dtype=bool)
    edge[28:100, 44:148] = True
    assert _mean_diff(out[~edge], start[~edge]) == 0.0  # kept: the init image's own pixels
    assert _mean_diff(out[painted], start[painted]) > 15.0
    inverted = _run(engine, init, kind="inpaint", strength=1.0, mask_image=Image.eval(mask, lambda v: 255 - v))[0]
    inner = np.zeros((H, W), dtype=bool)
    inner[36:92, 52:140] = True  # inside the square, clear of its soft (resized) edge
    assert _mean_diff(inverted[inner], start[inner]) == 0.0
    assert _mean_diff(inverted[~edge], start[~edge]) > 15.0


def test_inputs_are_placed_where_the_output_crops(engine: DemoEngine) -> None:
    # A wide init at the model's size keeps its aspect in the square: the band above and below repeats its edge.
    init = np.zeros((32, 64, 3), dtype=np.float32)
    init[:, :32] = 255.0
    square = init_to_model(init, 64)
    assert square.shape == (3, 64, 64)
    assert square[:, 16:48, :28].min() > 0.9 and square[:, 16:48, 36:].max() < -0.9
    mask = mask_to_model(np.zeros((32, 64), dtype=np.float32), 64)
    assert mask[0, :14].min() == 1.0 and mask[0, 18:46].max() == 0.0  # bands repainted, the frame kept


def test_variation_seed_walks_from_the_seed_to_the_variation_seed(engine: DemoEngine, init: Image.Image) -> None:
    def txt(seed: int, **variation: Any) -> np.ndarray:
        return _run(engine, init, kind="txt2img", seeds=[seed], **variation)[0]

    base, other = txt(5), txt(77)
    assert np.array_equal(txt(5, variation_seeds=[77], variation_strength=0.0), base)
    assert _mean_diff(txt(5, variation_seeds=[77], variation_strength=1.0), other) < 0.5
    distances = [
        (_mean_diff(v, base), _mean_diff(v, other))
        for v in (txt(5, variation_seeds=[77], variation_strength=s) for s in (0.25, 0.5, 0.75))
    ]
    # Further from the seed's picture and closer to the variation seed's as the strength grows.
    assert [d[0] for d in distances] == sorted(d[0] for d in distances)
    assert [d[1] for d in distances] == sorted((d[1] for d in distances), reverse=True)
    assert all(d[0] > 1.0 and d[1] > 1.0 for d in distances)


def test_variation_seed_is_reported_per_image(engine: DemoEngine) -> None:
    request = GenerationRequest(
        model=MODEL, prompt="a house", seeds=[1, 2], width=64, height=64, steps=2, variation_seeds=[9, 10]
    )
    plain = engine.generate(request, lambda s, t, **_: None, lambda: False)
    assert [g.variation_seed for g in plain] == [None, None]  # strength 0: no variation used
    varied = engine.generate(replace(request, variation_strength=0.3), lambda s, t, **_: None, lambda: False)
    assert [g.variation_seed for g in varied] == [9, 10]
