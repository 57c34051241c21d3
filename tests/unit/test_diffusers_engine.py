"""DiffusersEngine specifics, with tiny random pipelines (tests/tiny_pipeline.py) on the CPU.

The behaviour every engine shares (seeds, batches, progress, cancel, capabilities) is in
tests/contract/test_engine_contract.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from studiolo.engines.base import EngineError, GenerationRequest, JobKind, ModelLoadError, ModelRef, Preview
from studiolo.engines.diffusers_engine import DiffusersEngine, clip_tokenizer_from_package
from studiolo.engines.diffusers_sampling import SAMPLERS
from studiolo.engines.model_files import CONFIGS_DIR, KNOWN_PIPELINE_TASKS, pipeline_tasks
from tests.tiny_pipeline import TINY_CONFIG_ROOT_NAME, make_tiny_sd_pipeline, make_tiny_single_file

ROOT = Path(__file__).resolve().parents[2]
# diffusers' schedulers trip numpy 2 deprecation warnings inside diffusers itself; keep them from failing
# runs with ``-W error`` (a mark outranks the command line), while every other warning still counts.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sd")


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine(device="cpu")


def _ref(path: Path, model_id: str = "tiny", source: Any = "folder", arch: str | None = None) -> ModelRef:
    return ModelRef(id=model_id, engine="diffusers", source=source, path=path, arch=arch)


def _request(model: ModelRef, **overrides: Any) -> GenerationRequest:
    base = GenerationRequest(
        model=model,
        prompt="a red fox in the snow",
        seeds=[3],
        width=64,
        height=64,
        steps=2,
        guidance=4.0,
        init_image=_checkerboard(96, 80),
        mask_image=Image.new("L", (64, 64), 255),
    )
    return replace(base, **overrides)


def _checkerboard(width: int, height: int) -> Image.Image:
    ys, xs = np.mgrid[0:height, 0:width]
    board = (((xs // 8) + (ys // 8)) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([board, 255 - board, board // 2], axis=-1), "RGB")


def _pixels(engine: DiffusersEngine, request: GenerationRequest) -> np.ndarray:
    (generated,) = engine.generate(request, lambda s, t, preview=None: None, lambda: False)
    return np.asarray(generated.image, dtype=np.int16)


# --- import cost ------------------------------------------------------------------------------------------


def test_importing_the_engines_does_not_import_torch_or_diffusers() -> None:
    code = (
        "import sys, studiolo.engines.diffusers_engine, studiolo.engines.echo, studiolo.engines.model_files; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# --- generation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["txt2img", "img2img", "inpaint"])
def test_batch_matches_single_seed_on_float_output(engine: DiffusersEngine, tiny_dir: Path, kind: JobKind) -> None:
    model = _ref(tiny_dir)
    batch = engine.generate_arrays(
        _request(model, kind=kind, seeds=[1, 2, 3]), lambda s, t, preview=None: None, lambda: False
    )
    alone = engine.generate_arrays(
        _request(model, kind=kind, seeds=[2]), lambda s, t, preview=None: None, lambda: False
    )
    assert [seed for seed, _ in batch] == [1, 2, 3]
    assert batch[1][1].shape == (64, 64, 3) and batch[1][1].dtype == np.float32
    assert np.abs(batch[1][1] - alone[0][1]).max() < 1e-4


def test_img2img_depends_on_the_init_image_and_strength(engine: DiffusersEngine, tiny_dir: Path) -> None:
    model = _ref(tiny_dir)
    board = _pixels(engine, _request(model, kind="img2img"))
    plain = _pixels(engine, _request(model, kind="img2img", init_image=Image.new("RGB", (30, 30), "navy")))
    assert board.shape == (64, 64, 3)  # the init image is resized to the requested size
    assert not np.array_equal(board, plain)
    calls: list[tuple[int, int]] = []
    engine.generate(
        _request(model, kind="img2img", steps=4, strength=0.5, sampler="euler"),
        lambda s, t, preview=None: calls.append((s, t)),
        lambda: False,
    )
    # strength 0.5 runs the last half of the schedule only.
    assert calls[-1] == (2, 2)


def test_inpaint_depends_on_the_mask(engine: DiffusersEngine, tiny_dir: Path) -> None:
    model = _ref(tiny_dir)
    repaint_all = _pixels(engine, _request(model, kind="inpaint"))
    keep_all = _pixels(engine, _request(model, kind="inpaint", mask_image=Image.new("L", (64, 64), 0)))
    assert repaint_all.shape == keep_all.shape == (64, 64, 3)
    assert not np.array_equal(repaint_all, keep_all)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"width": 60}, "invalid_request"),
        ({"seeds": []}, "invalid_request"),
        ({"steps": 0}, "invalid_request"),
        ({"kind": "img2img", "init_image": None}, "invalid_request"),
        ({"kind": "inpaint", "mask_image": None}, "invalid_request"),
        ({"kind": "img2img", "strength": 0.0}, "invalid_request"),
        ({"sampler": "warp_drive"}, "invalid_sampler"),
    ],
)
def test_invalid_requests_are_refused(
    engine: DiffusersEngine, tiny_dir: Path, overrides: dict[str, Any], code: str
) -> None:
    with pytest.raises(EngineError) as excinfo:
        engine.generate(_request(_ref(tiny_dir), **overrides), lambda s, t, preview=None: None, lambda: False)
    assert excinfo.value.code == code


def test_every_sampler_runs_and_is_reported(engine: DiffusersEngine, tiny_dir: Path) -> None:
    model = _ref(tiny_dir)
    outputs: dict[str, np.ndarray] = {}
    for sampler in SAMPLERS:
        (generated,) = engine.generate(
            _request(model, sampler=sampler, width=32, height=32), lambda s, t, preview=None: None, lambda: False
        )
        assert generated.sampler == sampler
        outputs[sampler] = np.asarray(generated.image, dtype=np.int16)
    assert not np.array_equal(outputs["euler"], outputs["ddim"])
    # "default" keeps the model's own scheduler (PNDM for the tiny SD 1.5-like model) and names it.
    for default in (None, "default"):
        (generated,) = engine.generate(_request(model, sampler=default), lambda s, t, preview=None: None, lambda: False)
        assert generated.sampler == "pndm"
    assert np.array_equal(_pixels(engine, _request(model, sampler="pndm")), _pixels(engine, _request(model)))


def test_concurrent_generations_on_one_model_are_serialised(engine: DiffusersEngine, tiny_dir: Path) -> None:
    model = _ref(tiny_dir)
    expected = {s: _pixels(engine, _request(model, seeds=[s], sampler="euler_a")) for s in (1, 2)}
    results: dict[int, np.ndarray] = {}
    errors: list[Exception] = []

    def work(seed: int) -> None:
        try:
            results[seed] = _pixels(engine, _request(model, seeds=[seed], sampler="euler_a"))
        except Exception as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert all(np.array_equal(results[s], expected[s]) for s in (1, 2))


def test_out_of_memory_becomes_a_retryable_engine_error(
    engine: DiffusersEngine, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _ref(tiny_dir)
    engine.load(model)

    def oom(**kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    entry = engine._cache[model.id]
    monkeypatch.setitem(entry.pipes, "txt2img", oom)
    with pytest.raises(EngineError) as excinfo:
        engine.generate(_request(model), lambda s, t, preview=None: None, lambda: False)
    assert excinfo.value.code == "out_of_memory" and excinfo.value.retryable


def _previews(engine: DiffusersEngine, request: GenerationRequest) -> list[tuple[int, int, Image.Image | None]]:
    found: list[tuple[int, int, Image.Image | None]] = []

    def on_step(step: int, total: int, preview: Preview | None = None) -> None:
        assert callable(preview)  # latents are only turned into a picture when asked
        found.append((step, total, preview()))

    engine.generate(request, on_step, lambda: False)
    return found


@pytest.mark.parametrize("kind", ["txt2img", "img2img", "inpaint"])
def test_previews_show_the_first_latent_at_the_latent_size(
    engine: DiffusersEngine, tiny_dir: Path, kind: JobKind
) -> None:
    model = _ref(tiny_dir)
    batch = _previews(engine, _request(model, kind=kind, width=64, height=48, steps=3, seeds=[3, 9]))
    alone = _previews(engine, _request(model, kind=kind, width=64, height=48, steps=3, seeds=[3]))
    # The tiny VAE halves the size (two blocks); SD's real one divides it by 8.
    factor = engine._cache["tiny"].base.vae_scale_factor
    assert factor == 2
    assert [(s, t) for s, t, _ in batch] == [(s, t) for s, t, _ in alone] and len(batch) >= 2
    for (_s, _t, first), (_s2, _t2, single) in zip(batch, alone, strict=True):
        assert first is not None and single is not None
        assert first.mode == "RGB" and first.size == (64 // factor, 48 // factor)
        # Image 0 of the batch: the same picture as its seed alone (up to batched float rounding).
        assert np.abs(np.asarray(first, np.int16) - np.asarray(single, np.int16)).max() <= 2


def test_latent_preview_maps_channels_to_colours_and_skips_unknown_layouts() -> None:
    import torch

    from studiolo.engines.latent_preview import is_sdxl, latent_preview

    grey = latent_preview(torch.zeros(2, 4, 6, 10), sdxl=False)
    assert grey is not None and grey.size == (10, 6) and set(np.asarray(grey).ravel().tolist()) == {128}
    blue = latent_preview(torch.zeros(1, 4, 2, 2).index_fill_(1, torch.tensor([3]), -1.0), sdxl=False)
    assert blue is not None and tuple(np.asarray(blue)[0, 0]) == (155, 161, 219)  # the 4th channel's row, negated
    assert latent_preview(torch.zeros(1, 16, 8, 8), sdxl=False) is None  # SD3/Flux latents: no factors
    assert latent_preview(torch.zeros(4, 8, 8), sdxl=False) is None
    xl = latent_preview(torch.zeros(1, 4, 2, 2), sdxl=True)
    assert xl is not None and tuple(np.asarray(xl)[0, 0]) != (128, 128, 128)  # SDXL's map has a bias

    class StableDiffusionXLImg2ImgPipeline:
        pass

    assert is_sdxl(StableDiffusionXLImg2ImgPipeline()) and not is_sdxl(object())


# --- cache ------------------------------------------------------------------------------------------------


def test_is_loaded_and_unload(tiny_dir: Path) -> None:
    engine = DiffusersEngine(device="cpu")
    model = _ref(tiny_dir, "a")
    assert not engine.is_loaded("a")
    engine.load(model)
    assert engine.is_loaded("a") and engine.loaded_bytes() > 1_000_000
    assert engine.unload("a") and not engine.is_loaded("a") and engine.loaded_bytes() == 0
    assert not engine.unload("a")


def test_lru_eviction_under_the_memory_budget(tiny_dir: Path) -> None:
    probe = DiffusersEngine(device="cpu")
    probe.load(_ref(tiny_dir, "probe"))
    one_model = probe.loaded_bytes()

    engine = DiffusersEngine(device="cpu", memory_budget_bytes=2 * one_model)
    a, b, c = (_ref(tiny_dir, name) for name in "abc")
    engine.load(a)
    engine.load(b)
    engine.generate(_request(a), lambda s, t, preview=None: None, lambda: False)  # a becomes the most recently used
    engine.load(c)
    assert (engine.is_loaded("a"), engine.is_loaded("b"), engine.is_loaded("c")) == (True, False, True)
    assert engine.loaded_bytes() <= engine.memory_budget_bytes


def test_a_budget_smaller_than_one_model_still_keeps_the_model_in_use(tiny_dir: Path) -> None:
    engine = DiffusersEngine(device="cpu", memory_budget_bytes=1)
    engine.load(_ref(tiny_dir, "a"))
    assert engine.is_loaded("a")
    images = engine.generate(_request(_ref(tiny_dir, "b")), lambda s, t, preview=None: None, lambda: False)
    assert len(images) == 1
    assert engine.is_loaded("b") and not engine.is_loaded("a")


def test_out_of_memory_while_loading_drops_idle_models_and_retries(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = DiffusersEngine(device="cpu")
    engine.load(_ref(tiny_dir, "a"))
    real_load = engine._load_pipeline
    attempts: list[str] = []

    def flaky_load(model: ModelRef) -> Any:
        attempts.append(model.id)
        if len(attempts) == 1:
            raise RuntimeError("CUDA out of memory while moving the UNet")
        return real_load(model)

    monkeypatch.setattr(engine, "_load_pipeline", flaky_load)
    engine.load(_ref(tiny_dir, "b"))
    assert attempts == ["b", "b"]
    assert engine.is_loaded("b") and not engine.is_loaded("a")


def test_safety_checker_and_progress_bars_are_off(
    tiny_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import shutil

    # A model_index that names a safety checker whose weights are absent: loading must not try to load it.
    folder = tmp_path / "with-checker"
    shutil.copytree(tiny_dir, folder)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    engine = DiffusersEngine(device="cpu")
    model = _ref(folder, "checked")
    engine.load(model)
    assert engine._cache["checked"].base.safety_checker is None
    capfd.readouterr()
    engine.generate(_request(model, steps=3), lambda s, t, preview=None: None, lambda: False)
    captured = capfd.readouterr()
    assert "it/s" not in captured.err and "it/s" not in captured.out


def test_auto_device_prefers_an_accelerator() -> None:
    import torch

    device = DiffusersEngine().device
    if torch.cuda.is_available():
        assert device == "cuda"
    else:
        assert device in ("mps", "cpu")
    assert DiffusersEngine(device="cpu").device == "cpu"


# --- capabilities -----------------------------------------------------------------------------------------


def test_capabilities_before_and_after_loading_agree(tiny_dir: Path, tmp_path: Path) -> None:
    inpaint_dir = make_tiny_sd_pipeline(tmp_path / "inpaint", inpaint=True)
    engine = DiffusersEngine(device="cpu")
    for model in (_ref(tiny_dir), _ref(inpaint_dir, "inpaint")):
        before = engine.capabilities(model)
        engine.load(model)
        assert engine.capabilities(model) == before
    inpaint_caps = engine.capabilities(_ref(inpaint_dir, "inpaint"))
    assert (inpaint_caps.txt2img, inpaint_caps.img2img, inpaint_caps.inpaint) == (False, False, True)


def test_static_task_table_matches_diffusers_auto_pipelines() -> None:
    from diffusers.pipelines import auto_pipeline as ap

    def auto_tasks(name: str) -> tuple[bool, bool, bool]:
        family = next(
            (key for mapping in ap.SUPPORTED_TASKS_MAPPINGS for key, cls in mapping.items() if cls.__name__ == name),
            None,
        )
        return (
            family in ap.AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
            family in ap.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
            family in ap.AUTO_INPAINT_PIPELINES_MAPPING,
        )

    for name, tasks in KNOWN_PIPELINE_TASKS.items():
        assert pipeline_tasks(name) == tasks == auto_tasks(name), name
    # Inpainting models (9-channel UNet) only inpaint, although AutoPipeline would map them to every task.
    for name in ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline"):
        assert pipeline_tasks(name) == (False, False, True)
    assert pipeline_tasks("SomeFuturePipeline") == pipeline_tasks(None) == (True, False, False)


# --- loading errors ---------------------------------------------------------------------------------------


def test_missing_folder_is_a_model_load_error_with_a_fix(tmp_path: Path) -> None:
    engine = DiffusersEngine(device="cpu")
    with pytest.raises(ModelLoadError) as excinfo:
        engine.load(_ref(tmp_path / "gone"))
    assert excinfo.value.code == "model_unavailable"
    assert "studiolo models import PATH" in str(excinfo.value)


def test_folder_without_model_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        DiffusersEngine(device="cpu").load(_ref(tmp_path / "not-a-model"))


def test_corrupt_weights_are_a_model_load_error(tiny_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="studiolo models import"):
        DiffusersEngine(device="cpu").load(_ref(broken))


def test_corrupt_model_index_is_a_model_load_error(tiny_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken-index"
    shutil.copytree(tiny_dir, broken)
    (broken / "model_index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        DiffusersEngine(device="cpu").load(_ref(broken))


def test_pickle_checkpoints_are_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ModelLoadError, match="arbitrary code"):
        DiffusersEngine(device="cpu").load(_ref(ckpt, source="single_file"))


# --- single-file checkpoints ------------------------------------------------------------------------------


def test_single_file_checkpoint_loads_with_the_original_weights(tmp_path: Path) -> None:
    checkpoint = make_tiny_single_file(tmp_path)
    engine = DiffusersEngine(device="cpu", config_root=tmp_path / TINY_CONFIG_ROOT_NAME)
    model = _ref(checkpoint, "tiny-single", source="single_file")  # arch detected from the keys
    caps = engine.capabilities(model)
    assert (caps.txt2img, caps.img2img, caps.inpaint) == (True, True, True)
    for kind in ("txt2img", "img2img", "inpaint"):
        a = _pixels(engine, _request(model, kind=kind, prompt="a photo of a cat"))
        b = _pixels(engine, _request(model, kind=kind, prompt="a photo of a cat"))
        assert np.array_equal(a, b) and a.shape == (64, 64, 3)

    reference = DiffusersEngine(device="cpu")
    reference.load(_ref(tmp_path / "pipeline", "tiny-folder"))
    loaded, expected = engine._cache["tiny-single"].base, reference._cache["tiny-folder"].base
    for component in ("unet", "vae", "text_encoder"):
        got, want = getattr(loaded, component).state_dict(), getattr(expected, component).state_dict()
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[k].numpy(), want[k].numpy()) for k in want), component
    # The config folder has no tokenizer files: the packaged CLIP vocabulary is used.
    assert len(loaded.tokenizer) == 49408


def test_single_file_with_the_wrong_arch_hint_explains(tmp_path: Path) -> None:
    checkpoint = make_tiny_single_file(tmp_path)
    engine = DiffusersEngine(device="cpu", config_root=tmp_path / TINY_CONFIG_ROOT_NAME)
    with pytest.raises(ModelLoadError, match="sd21"):
        engine.load(_ref(checkpoint, "wrong", source="single_file", arch="sd21"))


def test_packaged_clip_tokenizer_matches_the_real_one() -> None:
    tokenizer = clip_tokenizer_from_package()
    # Token ids of openai/clip-vit-large-patch14 (the SD 1.x tokenizer).
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("Jekyll!").input_ids == [49406, 49405, 256, 49407]
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    sd2 = clip_tokenizer_from_package({"pad_token": "!"})
    assert sd2.pad_token_id == 0


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        # Published parameter counts: UNet, VAE, text encoder(s).
        ("sd15", [859_520_964, 83_653_863, 123_060_480]),
        ("sd21", [865_910_724, 83_653_863, 340_387_840]),
        ("sdxl", [2_567_463_684, 83_653_863, 123_060_480, 694_659_840]),
    ],
)
def test_packaged_architecture_configs_match_the_public_models(arch: str, expected: list[int]) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIGS_DIR / arch
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    with init_empty_weights():  # meta tensors: no memory, no time
        models = [
            UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        ]
        if "text_encoder_2" in index:
            models.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2")))
    assert [sum(p.numel() for p in m.parameters()) for m in models] == expected
    for name in ("tokenizer", "tokenizer_2"):
        if name in index:
            assert (folder / name / "tokenizer_config.json").is_file()
