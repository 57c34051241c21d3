"""The diffusers engine's sigma schedules and variation seeds, on a tiny random pipeline (diffusers_sampling.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from studiolo.engines.base import EngineError, GenerationRequest, ModelRef
from studiolo.engines.diffusers_engine import DiffusersEngine
from studiolo.engines.diffusers_sampling import SAMPLERS, make_scheduler
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


def _request(model: ModelRef, **overrides: Any) -> GenerationRequest:
    base = GenerationRequest(model=model, prompt="a red fox", seeds=[3], width=64, height=64, steps=4, guidance=4.0)
    return replace(base, **overrides)


def _arrays(engine: DiffusersEngine, request: GenerationRequest) -> list[np.ndarray]:
    return [array for _seed, array in engine.generate_arrays(request, lambda s, t, **_: None, lambda: False)]


def test_capabilities_list_the_samplers_schedules_and_variation(engine: DiffusersEngine, model: ModelRef) -> None:
    caps = engine.capabilities(model)
    assert caps.samplers == tuple(SAMPLERS)
    assert set(caps.schedulers) == {"uniform", "karras", "exponential", "beta"}
    assert caps.variation_seed and caps.variation_kinds == ("txt2img",)


def test_schedules_set_the_schedulers_sigma_flags(engine: DiffusersEngine, model: ModelRef) -> None:
    engine.load(model)
    current = engine._cache[model.id].base.scheduler
    karras, name = make_scheduler(current, "euler", "karras")
    assert name == "euler" and karras.config.use_karras_sigmas and not karras.config.use_exponential_sigmas
    exponential, _ = make_scheduler(current, "dpmpp_2m_karras", "exponential")
    # The schedule wins over the sampler's own flag: one schedule at a time.
    assert exponential.config.use_exponential_sigmas and not exponential.config.use_karras_sigmas
    uniform, _ = make_scheduler(current, "dpmpp_2m_karras", "uniform")
    assert not uniform.config.use_karras_sigmas
    automatic, _ = make_scheduler(current, "dpmpp_2m_karras", "automatic")
    assert automatic.config.use_karras_sigmas  # the sampler's own


def test_schedules_change_the_picture_and_automatic_is_the_default(engine: DiffusersEngine, model: ModelRef) -> None:
    plain = _arrays(engine, _request(model, sampler="euler"))[0]
    assert np.array_equal(_arrays(engine, _request(model, sampler="euler", scheduler="automatic"))[0], plain)
    for schedule in ("karras", "exponential", "beta"):
        scheduled = _arrays(engine, _request(model, sampler="euler", scheduler=schedule))[0]
        assert np.abs(scheduled - plain).max() > 1e-3, schedule


def test_a_schedule_the_sampler_lacks_is_refused(engine: DiffusersEngine, model: ModelRef) -> None:
    for sampler in ("ddim", "euler_a", None):  # None: the tiny model's own PNDM
        with pytest.raises(EngineError) as excinfo:
            _arrays(engine, _request(model, sampler=sampler, scheduler="karras"))
        assert excinfo.value.code == "invalid_scheduler", sampler
    # "uniform" is what these samplers do anyway.
    assert _arrays(engine, _request(model, sampler="ddim", scheduler="uniform"))


def test_variation_seed_walks_from_the_seed_to_the_variation_seed(engine: DiffusersEngine, model: ModelRef) -> None:
    base = _arrays(engine, _request(model, seeds=[3]))[0]
    other = _arrays(engine, _request(model, seeds=[40]))[0]

    def varied(strength: float) -> np.ndarray:
        return _arrays(engine, _request(model, seeds=[3], variation_seeds=[40], variation_strength=strength))[0]

    assert np.array_equal(varied(0.0), base)  # no latents passed: the pipeline's own path
    assert np.abs(varied(1.0) - other).max() < 1e-4  # the variation seed's own noise, drawn as the pipeline does
    middle = varied(0.5)
    assert np.abs(middle - base).mean() > 1e-3 and np.abs(middle - other).mean() > 1e-3


def test_variation_batch_image_equals_its_seeds_alone(engine: DiffusersEngine, model: ModelRef) -> None:
    batch = _arrays(engine, _request(model, seeds=[3, 4, 5], variation_seeds=[8, 9, 10], variation_strength=0.3))
    alone = _arrays(engine, _request(model, seeds=[4], variation_seeds=[9], variation_strength=0.3))
    assert np.abs(batch[1] - alone[0]).max() < 1e-4


def test_variation_with_an_init_image_is_refused(engine: DiffusersEngine, model: ModelRef) -> None:
    from PIL import Image

    request = _request(
        model, kind="img2img", init_image=Image.new("RGB", (64, 64)), variation_seeds=[8], variation_strength=0.3
    )
    with pytest.raises(EngineError) as excinfo:
        _arrays(engine, request)
    assert excinfo.value.code == "unsupported_variation"
