"""IP-Adapter reference images on the diffusers engine (engines/ip_adapter.py), with the tiny random pipeline and a
tiny random IP-Adapter in the published file layout (tests/tiny_ip_adapter.py) on the CPU."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from studiolo.engines.base import AdapterRef, EngineError, GenerationRequest, HiresSpec, ModelRef, ReferenceSpec
from studiolo.engines.diffusers_engine import DiffusersEngine
from tests.tiny_ip_adapter import make_tiny_ip_adapter
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.usefixtures("one_torch_thread"),
]

RED = Image.new("RGB", (50, 40), (220, 30, 30))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    path = make_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sd")
    return ModelRef(id="tiny", engine="diffusers", source="folder", path=path)


@pytest.fixture(scope="module")
def adapter(model: ModelRef, tmp_path_factory: pytest.TempPathFactory) -> AdapterRef:
    assert model.path is not None
    weights = make_tiny_ip_adapter(tmp_path_factory.mktemp("ip") / "ip-tiny", model.path)
    meta = {"image_encoder": str(weights.parent / "image_encoder"), "context_dim": 32}
    return AdapterRef(id="ip-tiny", kind="ip_adapter", path=weights, format="diffusers", meta=meta)


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine(device="cpu")


def _request(model: ModelRef, **overrides: Any) -> GenerationRequest:
    base = GenerationRequest(
        model=model, prompt="a cat on a sofa", seeds=[5], width=64, height=64, steps=2, guidance=4.0, sampler="euler"
    )
    return replace(base, **overrides)


def _array(engine: DiffusersEngine, request: GenerationRequest, k: int = 0) -> np.ndarray:
    return engine.generate_arrays(request, lambda *_a, **_k: None, lambda: False)[k][1]


def test_a_reference_changes_the_picture_and_leaves_no_trace(
    engine: DiffusersEngine, model: ModelRef, adapter: AdapterRef
) -> None:
    plain = _array(engine, _request(model))
    red = _array(engine, _request(model, reference=ReferenceSpec(adapter, RED, 0.8)))
    blue = _array(engine, _request(model, reference=ReferenceSpec(adapter, Image.new("RGB", (30, 30), "navy"), 0.8)))
    weaker = _array(engine, _request(model, reference=ReferenceSpec(adapter, RED, 0.3)))
    assert np.abs(red - plain).mean() > 0.01
    assert np.abs(red - blue).mean() > 0.01  # the picture itself counts, not only the adapter being on
    assert np.abs(red - weaker).mean() > 0.005
    # Strength 0 is no reference, and a job without one after jobs with one draws the plain model's pixels.
    assert np.array_equal(_array(engine, _request(model, reference=ReferenceSpec(adapter, RED, 0.0))), plain)
    assert np.array_equal(_array(engine, _request(model)), plain)


@pytest.mark.parametrize("kind", ["img2img", "inpaint"])
def test_every_task_takes_a_reference_and_gives_it_back(
    engine: DiffusersEngine, model: ModelRef, adapter: AdapterRef, kind: Any
) -> None:
    task = {
        "kind": kind,
        "init_image": Image.new("RGB", (64, 64), "olive"),
        "mask_image": Image.new("L", (64, 64), 255),
    }
    plain = _array(engine, _request(model, **task))
    referenced = _array(engine, _request(model, reference=ReferenceSpec(adapter, RED, 1.0), **task))
    assert np.abs(referenced - plain).mean() > 0.01
    assert np.array_equal(_array(engine, _request(model, **task)), plain)


def test_image_k_of_a_batch_equals_the_same_seed_alone(
    engine: DiffusersEngine, model: ModelRef, adapter: AdapterRef
) -> None:
    reference = ReferenceSpec(adapter, RED, 0.7)
    batch = engine.generate_arrays(
        _request(model, seeds=[1, 2, 3], reference=reference), lambda *_a, **_k: None, lambda: False
    )
    alone = _array(engine, _request(model, seeds=[2], reference=reference))
    assert np.abs(batch[1][1] - alone).max() < 1e-4
    assert np.array_equal(alone, _array(engine, _request(model, seeds=[2], reference=reference)))  # deterministic


def test_hires_keeps_the_reference_in_both_passes(
    engine: DiffusersEngine, model: ModelRef, adapter: AdapterRef
) -> None:
    hires = HiresSpec(scale=2.0, strength=0.5, steps=2)
    plain = _array(engine, _request(model, hires=hires))
    referenced = _array(engine, _request(model, hires=hires, reference=ReferenceSpec(adapter, RED, 0.8)))
    assert referenced.shape == (128, 128, 3) and np.abs(referenced - plain).mean() > 0.01
    assert np.array_equal(_array(engine, _request(model, hires=hires)), plain)


def test_loaded_once_per_model_and_its_bytes_counted(
    model: ModelRef, adapter: AdapterRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    loads: list[str] = []
    original = transformers.CLIPVisionModelWithProjection.from_pretrained

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(transformers.CLIPVisionModelWithProjection, "from_pretrained", counting)
    engine = DiffusersEngine(device="cpu")
    engine.load(model)
    plain_bytes = engine.loaded_bytes()
    for strength in (0.5, 0.9, 0.0, 0.6):
        _array(engine, _request(model, reference=ReferenceSpec(adapter, RED, strength)))
    _array(engine, _request(model))
    assert len(loads) == 1
    held = engine._cache[model.id].extra_bytes["ip_adapter"]
    # At least the image encoder's parameters (float32), and all of it in the cache's count.
    encoder_params = sum(p.numel() for p in original(loads[0], local_files_only=True).parameters())
    assert held > encoder_params * 4
    assert engine.loaded_bytes() == plain_bytes + held

    # Another IP-Adapter replaces the first (one per model): loaded, counted, and drawing differently.
    assert model.path is not None
    other_file = make_tiny_ip_adapter(tmp_path / "other", model.path, seed=3)
    other = replace(
        adapter, id="ip-other", path=other_file, meta={"image_encoder": str(other_file.parent / "image_encoder")}
    )
    first = _array(engine, _request(model, reference=ReferenceSpec(adapter, RED, 0.8)))
    second = _array(engine, _request(model, reference=ReferenceSpec(other, RED, 0.8)))
    assert len(loads) == 2 and np.abs(first - second).mean() > 0.01
    # Back to the first: loaded again from its file, drawing what it drew before.
    assert np.array_equal(_array(engine, _request(model, reference=ReferenceSpec(adapter, RED, 0.8))), first)
    assert len(loads) == 3
    assert engine.loaded_bytes() == plain_bytes + engine._cache[model.id].extra_bytes["ip_adapter"]


def test_damaged_or_incomplete_adapters_are_refused_clearly(
    engine: DiffusersEngine, model: ModelRef, adapter: AdapterRef, tmp_path: Path
) -> None:
    plain = _array(engine, _request(model))
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(adapter.path.read_bytes()[:200])
    no_encoder = replace(adapter, id="no-encoder", meta={"image_encoder": str(tmp_path / "nowhere")})
    cases = [
        (replace(adapter, id="damaged", path=damaged), "model_file_corrupt"),
        (no_encoder, "adapter_unavailable"),
        (replace(adapter, id="gone", path=tmp_path / "gone.safetensors"), "adapter_unavailable"),
    ]
    for ref, code in cases:
        with pytest.raises(EngineError) as info:
            _array(engine, _request(model, reference=ReferenceSpec(ref, RED, 0.5)))
        assert info.value.code == code, ref.id
    assert np.array_equal(_array(engine, _request(model)), plain)  # a failed load leaves the model as it was
