"""LoRAs and textual-inversion embeddings in the diffusers engine (engines/lora.py), on tiny random models.

The LoRA and embedding files are random but laid out as users download them (tests/tiny_lora.py): kohya and
diffusers/PEFT LoRAs, an A1111 embedding. Pixels are compared exactly where the engine promises exactness (no LoRA,
weight 0, a job after a LoRA job) and as float arrays before 8-bit rounding.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from studiolo.engines import lora as lora_module
from studiolo.engines.base import AdapterRef, EngineError, GenerationRequest, LoraSpec, ModelRef
from studiolo.engines.diffusers_engine import DiffusersEngine
from tests.tiny_lora import make_corrupt_file, make_embedding, make_kohya_lokr, make_kohya_lora, make_peft_lora
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora")
    return {
        "model": make_tiny_sd_pipeline(root / "tiny-sd"),
        "kohya": make_kohya_lora(root / "kohya.safetensors", seed=0),
        "kohya2": make_kohya_lora(root / "kohya2.safetensors", seed=5),
        "kohya3": make_kohya_lora(root / "kohya3.safetensors", seed=7, text_encoder=False),
        "peft": make_peft_lora(root / "peft.safetensors", seed=1),
        "lokr": make_kohya_lokr(root / "lokr.safetensors"),
        "wide": make_kohya_lora(root / "wide.safetensors", seed=3, width=48),
        "corrupt": make_corrupt_file(root / "corrupt.safetensors"),
        "embedding": make_embedding(root / "emb.safetensors"),
        "wide_embedding": make_embedding(root / "wide-emb.safetensors", width=48),
    }


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine(device="cpu")


def _model(files: dict[str, Path], model_id: str) -> ModelRef:
    # A model id per test: each test starts from a freshly loaded model with no adapters on it.
    return ModelRef(id=model_id, engine="diffusers", source="folder", path=files["model"])


def _lora(files: dict[str, Path], name: str, weight: float = 1.0) -> LoraSpec:
    return LoraSpec(AdapterRef(id=name, kind="lora", path=files[name], format="kohya", sha256=name), weight)


def _embedding(files: dict[str, Path], name: str, adapter_id: str = "tinyemb") -> AdapterRef:
    return AdapterRef(id=adapter_id, kind="embedding", path=files[name], format="a1111", sha256=name)


def _request(model: ModelRef, **overrides: Any) -> GenerationRequest:
    base = GenerationRequest(model=model, prompt="a red fox", seeds=[3], width=64, height=64, steps=2, guidance=4.0)
    return replace(base, **overrides)


def _arrays(engine: DiffusersEngine, request: GenerationRequest) -> list[np.ndarray]:
    return [a for _seed, a in engine.generate_arrays(request, lambda s, t, preview=None: None, lambda: False)]


def _one(engine: DiffusersEngine, request: GenerationRequest) -> np.ndarray:
    (array,) = _arrays(engine, request)
    return array


def _adapters(engine: DiffusersEngine, model_id: str) -> set[str]:
    base = engine._cache[model_id].base
    return {name for names in base.get_list_adapters().values() for name in names}


# --- LoRA -----------------------------------------------------------------------------------------------------


def test_weight_zero_equals_no_lora_and_weight_one_changes_the_output(
    engine: DiffusersEngine, files: dict[str, Path]
) -> None:
    model = _model(files, "weights")
    plain = _one(engine, _request(model))
    zero = _one(engine, _request(model, loras=[_lora(files, "kohya", 0.0)]))
    assert np.array_equal(zero, plain)
    assert engine._cache["weights"].extra_bytes.get("lora", 0) == 0  # weight 0: not even loaded
    one = _one(engine, _request(model, loras=[_lora(files, "kohya", 1.0)]))
    half = _one(engine, _request(model, loras=[_lora(files, "kohya", 0.5)]))
    assert np.abs(one - plain).max() > 0.02
    assert np.abs(half - plain).max() > 0.005 and np.abs(half - one).max() > 0.005
    # A LoRA loaded and then asked at weight 0 is switched off, not computed at scale 0.
    assert np.array_equal(_one(engine, _request(model, loras=[_lora(files, "kohya", 0.0)])), plain)


def test_a_job_without_lora_after_one_with_it_gets_the_base_pixels(
    engine: DiffusersEngine, files: dict[str, Path]
) -> None:
    model = _model(files, "after")
    plain = engine.generate(_request(model), lambda s, t, preview=None: None, lambda: False)[0].image
    with_lora = engine.generate(
        _request(model, loras=[_lora(files, "kohya")]), lambda s, t, preview=None: None, lambda: False
    )[0].image
    after = engine.generate(_request(model), lambda s, t, preview=None: None, lambda: False)[0].image
    assert not np.array_equal(np.asarray(with_lora), np.asarray(plain))
    assert np.array_equal(np.asarray(after), np.asarray(plain))
    for kind in ("img2img", "inpaint"):  # the task pipelines share the modules the LoRA was loaded onto
        from PIL import Image

        task = {
            "kind": kind,
            "init_image": Image.new("RGB", (64, 64), "olive"),
            "mask_image": Image.new("L", (64, 64), 255),
        }
        before = _one(engine, _request(model, **task))
        changed = _one(engine, _request(model, loras=[_lora(files, "kohya")], **task))
        assert np.abs(changed - before).max() > 0.01
        assert np.array_equal(_one(engine, _request(model, **task)), before)


@pytest.mark.parametrize("name", ["kohya", "peft"])
def test_kohya_and_peft_files_load_and_act(engine: DiffusersEngine, files: dict[str, Path], name: str) -> None:
    model = _model(files, f"format-{name}")
    plain = _one(engine, _request(model))
    changed = _one(engine, _request(model, loras=[_lora(files, name)]))
    assert np.abs(changed - plain).max() > 0.02
    base = engine._cache[f"format-{name}"].base
    adapters = base.get_list_adapters()
    assert adapters["unet"]  # LoRA layers in the UNet
    # kohya's file also has text-encoder layers (lora_te_...), the PEFT one only UNet layers.
    assert bool(adapters.get("text_encoder")) == (name == "kohya")


def test_switching_loras_keeps_the_base_loaded_and_each_lora_loaded_once(
    engine: DiffusersEngine, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(files, "switch")
    loads: list[str] = []
    real_load = engine._load_entry

    def counting_load(ref: ModelRef) -> Any:
        loads.append(ref.id)
        return real_load(ref)

    monkeypatch.setattr(engine, "_load_entry", counting_load)
    plain = _one(engine, _request(model))
    first = _one(engine, _request(model, loras=[_lora(files, "kohya")]))
    second = _one(engine, _request(model, loras=[_lora(files, "peft")]))
    load_lora = engine._cache["switch"].base.load_lora_weights
    calls: list[str] = []
    monkeypatch.setattr(
        engine._cache["switch"].base,
        "load_lora_weights",
        lambda *a, **k: (calls.append(k["adapter_name"]), load_lora(*a, **k))[1],
    )
    again = _one(engine, _request(model, loras=[_lora(files, "kohya")]))
    again2 = _one(engine, _request(model, loras=[_lora(files, "peft")]))
    assert loads == ["switch"]  # one base load for every job
    assert calls == []  # both LoRAs stayed loaded: switching only picks adapters
    assert len(_adapters(engine, "switch")) == 2
    assert np.array_equal(again, first) and np.array_equal(again2, second)
    assert not np.array_equal(first, second) and not np.array_equal(first, plain)


def test_two_loras_at_once_with_their_weights(engine: DiffusersEngine, files: dict[str, Path]) -> None:
    model = _model(files, "two")
    plain = _one(engine, _request(model))
    kohya = _one(engine, _request(model, loras=[_lora(files, "kohya")]))
    peft = _one(engine, _request(model, loras=[_lora(files, "peft")]))
    both = _one(engine, _request(model, loras=[_lora(files, "kohya"), _lora(files, "peft")]))
    weighted = _one(engine, _request(model, loras=[_lora(files, "kohya"), _lora(files, "peft", 0.3)]))
    for alone in (plain, kohya, peft):
        assert np.abs(both - alone).max() > 0.005
    assert np.abs(weighted - both).max() > 0.005
    # The order the job lists them in does not matter (the effects add up).
    swapped = _one(engine, _request(model, loras=[_lora(files, "peft"), _lora(files, "kohya")]))
    assert np.abs(swapped - both).max() < 1e-5
    # One LoRA with the other at weight 0 is that LoRA alone.
    assert np.array_equal(_one(engine, _request(model, loras=[_lora(files, "kohya"), _lora(files, "peft", 0)])), kohya)


def test_batch_matches_single_and_seeds_repeat_with_a_lora(engine: DiffusersEngine, files: dict[str, Path]) -> None:
    model = _model(files, "batch")
    loras = [_lora(files, "kohya", 0.8)]
    batch = _arrays(engine, _request(model, seeds=[1, 2, 3], loras=loras))
    alone = _one(engine, _request(model, seeds=[2], loras=loras))
    assert np.abs(batch[1] - alone).max() < 1e-4
    assert np.array_equal(_one(engine, _request(model, seeds=[2], loras=loras)), alone)
    assert not np.array_equal(batch[0], batch[1])


def test_a_damaged_file_is_model_file_corrupt(engine: DiffusersEngine, files: dict[str, Path]) -> None:
    model = _model(files, "corrupt")
    plain = _one(engine, _request(model))
    with pytest.raises(EngineError) as caught:
        _one(engine, _request(model, loras=[_lora(files, "corrupt")]))
    assert caught.value.code == "model_file_corrupt"
    assert "corrupt.safetensors" in str(caught.value)
    assert np.array_equal(_one(engine, _request(model)), plain)


def test_a_lora_for_another_model_is_adapter_incompatible(engine: DiffusersEngine, files: dict[str, Path]) -> None:
    model = _model(files, "wide")
    plain = _one(engine, _request(model))
    with pytest.raises(EngineError) as caught:  # the first LoRA loads, the second does not fit
        _one(engine, _request(model, loras=[_lora(files, "kohya"), _lora(files, "wide")]))
    assert caught.value.code == "adapter_incompatible"
    assert "shape mismatch" in str(caught.value)
    # Nothing of the failed load is left on the model, and the job's other LoRA is off for a plain job.
    assert len(_adapters(engine, "wide")) == 1
    assert np.array_equal(_one(engine, _request(model)), plain)
    assert np.abs(_one(engine, _request(model, loras=[_lora(files, "kohya")])) - plain).max() > 0.02


def test_lora_bytes_are_counted_and_dropped_with_the_model(engine: DiffusersEngine, files: dict[str, Path]) -> None:
    small = DiffusersEngine(device="cpu")
    model = _model(files, "bytes")
    small.load(model)
    base_bytes = small.loaded_bytes()
    _one(small, _request(model, loras=[_lora(files, "kohya")]))
    one = small._cache["bytes"].extra_bytes["lora"]
    # rank 4: (32*4 + 4*64) * 4 UNet layers + (32*4 + 4*32) * 4 text-encoder layers, float32
    assert one == ((32 * 4 + 4 * 64) * 4 + (32 * 4 + 4 * 32) * 4) * 4
    _one(small, _request(model, loras=[_lora(files, "peft")]))
    assert small._cache["bytes"].extra_bytes["lora"] > one
    assert small.loaded_bytes() == base_bytes + small._cache["bytes"].extra_bytes["lora"]
    # Evicted for another model by the byte budget: the LoRAs go with it.
    small.memory_budget_bytes = base_bytes + 1
    small.load(_model(files, "other"))
    assert not small.is_loaded("bytes")
    assert small.loaded_bytes() == base_bytes


def test_at_most_max_loras_stay_loaded(
    engine: DiffusersEngine, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lora_module, "MAX_LORAS_PER_MODEL", 2)
    model = _model(files, "lru")
    first = _one(engine, _request(model, loras=[_lora(files, "kohya")]))
    _one(engine, _request(model, loras=[_lora(files, "peft")]))
    two = engine._cache["lru"].extra_bytes["lora"]
    _one(engine, _request(model, loras=[_lora(files, "kohya3")]))  # the least recently used (kohya) goes
    entry = engine._cache["lru"]
    assert len(_adapters(engine, "lru")) == 2
    assert [key[0] for key in entry.extras["lora"].loras] == ["peft", "kohya3"]
    assert entry.extra_bytes["lora"] < two  # kohya3 has no text-encoder layers: fewer bytes than kohya
    # A deleted LoRA asked again is loaded again, with the same effect.
    assert np.array_equal(_one(engine, _request(model, loras=[_lora(files, "kohya")])), first)


# --- embeddings -----------------------------------------------------------------------------------------------


def test_an_embedding_acts_only_where_the_prompt_uses_it(engine: DiffusersEngine, files: dict[str, Path]) -> None:
    model = _model(files, "embedding")
    emb = _embedding(files, "embedding")
    plain = _one(engine, _request(model))
    plain_neg = _one(engine, _request(model, prompt="a red fox tinyemb"))  # before the embedding is loaded
    with_emb = _one(engine, _request(model, prompt="a red fox tinyemb", embeddings=[emb]))
    assert np.abs(with_emb - plain_neg).max() > 0.005
    # Loaded and kept: a prompt without its token is untouched, with it the embedding acts again.
    assert np.array_equal(_one(engine, _request(model, embeddings=[emb])), plain)
    assert np.array_equal(_one(engine, _request(model)), plain)
    assert np.array_equal(_one(engine, _request(model, prompt="a red fox tinyemb", embeddings=[emb])), with_emb)
    entry = engine._cache["embedding"]
    assert entry.extra_bytes["lora"] == 2 * 32 * 4  # two 32-wide float32 vectors
    assert "tinyemb_1" in entry.base.tokenizer.get_vocab()  # the second vector's token


def test_an_embedding_of_another_width_is_adapter_incompatible(engine: DiffusersEngine, files: dict[str, Path]) -> None:
    model = _model(files, "embedding-wide")
    with pytest.raises(EngineError) as caught:
        _one(engine, _request(model, prompt="x widemb", embeddings=[_embedding(files, "wide_embedding", "widemb")]))
    assert caught.value.code == "adapter_incompatible"
    assert "48" in str(caught.value)
    with pytest.raises(EngineError) as corrupt:
        _one(engine, _request(model, embeddings=[_embedding(files, "corrupt", "bad")]))
    assert corrupt.value.code == "model_file_corrupt"


def test_a_lycoris_lokr_loads_into_the_unet_and_acts(engine: DiffusersEngine, files: dict[str, Path]) -> None:
    model = _model(files, "lokr")
    plain = _one(engine, _request(model))
    changed = _one(engine, _request(model, loras=[_lora(files, "lokr")]))
    assert np.abs(changed - plain).max() > 0.02
    assert engine._cache["lokr"].base.get_list_adapters()["unet"]
    assert engine._cache["lokr"].extra_bytes["lora"] == 4 * (8 * 4 + 8 * 8) * 4
    assert np.array_equal(_one(engine, _request(model)), plain)
    assert np.abs(_one(engine, _request(model, loras=[_lora(files, "lokr", 0.5)])) - changed).max() > 0.005
