"""The cache of converted models and quality-gate figures behind the accelerated CPU path (issue 20; accel/cache.py).

What is checked, on the tiny SD model and the OpenVINO path (whose conversion is the expensive part a cache saves):
a second engine on the same cache reuses the conversion and the gate's figures; a changed model gets a new entry;
an entry damaged in any way (manifest, a truncated file, IR files OpenVINO cannot read, gate figures) is rebuilt or
re-measured and the job still succeeds. One conversion of the tiny model costs ~5 s here, so the converted cache is
made once per module and copied into each test that damages it (keys hash relative names, sizes and mtimes, which a
copy with ``copy2`` keeps).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from studiolo.engines.accel import gate, openvino_modules, plan
from studiolo.engines.accel.cache import MANIFEST, AccelCache, model_fingerprint
from studiolo.engines.accel.openvino_modules import OV_CACHE_DIR, UNET_IR
from studiolo.engines.base import GenerationRequest, ModelRef, Preview
from studiolo.engines.diffusers_engine import DiffusersEngine
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),  # as in test_diffusers_engine.py
    pytest.mark.usefixtures("one_torch_thread"),
]


@dataclass
class Counts:
    """Calls into the expensive parts of a load: conversions and gate pictures."""

    converts: int = 0
    renders: int = 0
    log: list[str] = field(default_factory=list)


def _counting(monkeypatch: pytest.MonkeyPatch) -> Counts:
    """Count ``plan.convert`` and ``gate.render`` calls (the real functions still run)."""
    counts = Counts()
    real_convert, real_render = openvino_modules.convert, gate.render

    def convert(base: Any, folder: Path) -> None:
        counts.converts += 1
        real_convert(base, folder)

    def render(base: Any, side: int) -> Any:
        counts.renders += 1
        return real_render(base, side)

    monkeypatch.setattr(plan, "convert", convert)
    monkeypatch.setattr(gate, "render", render)
    return counts


def _ignore(step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
    """An on_step that takes everything an engine may pass."""


def _engine(cache_dir: Path) -> DiffusersEngine:
    return DiffusersEngine(device="cpu", cpu_accel="openvino", accel_cache_dir=cache_dir, threads=1)


def _generate(engine: DiffusersEngine, model: ModelRef) -> np.ndarray:
    request = GenerationRequest(model=model, prompt="a lighthouse", seeds=[3], width=64, height=64, steps=2)
    ((_seed, array),) = engine.generate_arrays(request, _ignore, lambda: False)
    return np.asarray(array)


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir())


@dataclass(frozen=True)
class Warm:
    model: ModelRef
    cache_dir: Path
    first_load: Counts  # what the load that filled the cache did
    image: np.ndarray  # seed 3 on the OpenVINO path, from that first engine


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> Iterator[Warm]:
    """The tiny model, and a cache that one engine filled by loading it on the OpenVINO path."""
    tmp = tmp_path_factory.mktemp("accel-cache")
    model = ModelRef(id="tiny", engine="diffusers", source="folder", path=make_tiny_sd_pipeline(tmp / "tiny", seed=0))
    with pytest.MonkeyPatch.context() as monkeypatch:
        counts = _counting(monkeypatch)
        engine = _engine(tmp / "cache")
        image = _generate(engine, model)
    assert engine._cache["tiny"].accel.path == "openvino"
    yield Warm(model, tmp / "cache", counts, image)


@pytest.fixture
def cache_copy(warm: Warm, tmp_path: Path) -> Path:
    """A copy of the warm cache, for a test to damage."""
    return Path(shutil.copytree(warm.cache_dir, tmp_path / "cache", copy_function=shutil.copy2))


def _loads_and_runs(cache_dir: Path, warm: Warm) -> tuple[DiffusersEngine, np.ndarray]:
    """A fresh engine on ``cache_dir`` loads the model on the OpenVINO path and runs a job that passes the gate."""
    engine = _engine(cache_dir)
    image = _generate(engine, warm.model)
    accel = engine._cache["tiny"].accel
    assert accel.path == "openvino" and accel.quality is not None and accel.quality.passed, accel.describe()
    return engine, image


# --- reuse ------------------------------------------------------------------------------------------------------


def test_a_second_engine_reuses_the_conversion_and_the_gate_figures(
    warm: Warm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first load converted once and drew the gate's two pictures (fp32 reference, OpenVINO).
    assert (warm.first_load.converts, warm.first_load.renders) == (1, 2)
    counts = _counting(monkeypatch)
    engine, image = _loads_and_runs(warm.cache_dir, warm)
    assert (counts.converts, counts.renders) == (0, 0)
    assert (engine.accel_cache.stats.hits, engine.accel_cache.stats.builds) == (1, 0)
    assert len(_entries(warm.cache_dir)) == 1
    # The same IR, compiled again (from OpenVINO's blob cache), draws the same picture.
    assert np.array_equal(image, warm.image)


def test_a_changed_model_gets_a_new_conversion(
    warm: Warm, cache_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UNet's weights replaced by other ones of the same size: only the modification time tells the files
    apart, and that is enough. The new entry's gate passing shows the IR is the new model's (the old IR against the
    new fp32 model would be far off)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(Path(str(warm.model.path)), tmp_path / "tiny", copy_function=shutil.copy2))
    model = ModelRef(id="tiny", engine="diffusers", source="folder", path=folder)
    assert model_fingerprint(folder) == model_fingerprint(Path(str(warm.model.path)))  # the copy hits the cache
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    size = weights.stat().st_size
    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(weights))
    save_file({name: -tensor for name, tensor in tensors.items()}, str(weights), metadata=metadata)
    assert weights.stat().st_size == size

    counts = _counting(monkeypatch)
    engine = _engine(cache_copy)
    image = _generate(engine, model)
    accel = engine._cache["tiny"].accel
    assert accel.path == "openvino" and accel.quality is not None and accel.quality.passed, accel.describe()
    assert (counts.converts, counts.renders) == (1, 2)
    assert engine.accel_cache.stats.builds == 1
    assert len(_entries(cache_copy)) == 2  # the old model's entry stays (another install may still use it)
    assert not np.array_equal(image, warm.image)


# --- damaged entries ----------------------------------------------------------------------------------------------


def _only_entry(cache_dir: Path) -> Path:
    (entry,) = _entries(cache_dir)
    return entry


def _garbage_manifest(entry: Path) -> None:
    (entry / MANIFEST).write_text("{not json", encoding="utf-8")


def _truncated_weights(entry: Path) -> None:
    weights = entry / "unet.bin"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _garbage_ir(entry: Path) -> None:
    """The UNet's IR replaced by bytes OpenVINO cannot parse, at its listed size (the manifest check passes). The
    compiled blobs of the undamaged IR stay in the entry: OpenVINO reads the IR all the same (measured with 2026.4),
    so it is the compile that fails (``plan._compile`` then discards and converts again)."""
    xml = entry / UNET_IR
    size = xml.stat().st_size
    xml.write_bytes(b"\x00garbage" * (size // 8) + b"\x00" * (size % 8))
    assert xml.stat().st_size == size and any((entry / OV_CACHE_DIR).iterdir())


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_garbage_manifest, id="garbage-manifest"),
        pytest.param(_truncated_weights, id="truncated-weights"),
        pytest.param(_garbage_ir, id="garbage-ir"),
    ],
)
def test_a_damaged_entry_is_rebuilt_and_the_job_succeeds(
    warm: Warm, cache_copy: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Path], None]
) -> None:
    damage(_only_entry(cache_copy))
    counts = _counting(monkeypatch)
    engine, image = _loads_and_runs(cache_copy, warm)
    stats = engine.accel_cache.stats
    assert (counts.converts, stats.builds, stats.rebuilt_corrupt) == (1, 1, 1)
    # The rebuilt entry is whole again: a third engine uses it as it is.
    entry = _only_entry(cache_copy)
    assert AccelCache(cache_copy)._check(entry)["openvino"] is True
    # A conversion of the same fp32 modules: the same picture as before the damage.
    assert np.array_equal(image, warm.image)


def test_unreadable_gate_figures_are_measured_again(
    warm: Warm, cache_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate_file = _only_entry(cache_copy) / gate.GATE_FILE
    before = json.loads(gate_file.read_text(encoding="utf-8"))
    gate_file.write_text("[1, 2", encoding="utf-8")
    counts = _counting(monkeypatch)
    engine, _image = _loads_and_runs(cache_copy, warm)
    assert (counts.converts, counts.renders) == (0, 2)  # the conversion stays; the gate runs again
    assert engine.accel_cache.stats.rebuilt_corrupt == 0
    assert json.loads(gate_file.read_text(encoding="utf-8")) == before


# --- AccelCache on its own -------------------------------------------------------------------------------------


def _model_files(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}", encoding="utf-8")
    (folder / "unet" / "weights.safetensors").write_bytes(b"w" * 100)
    return folder


def test_a_build_that_fails_leaves_no_entry_and_no_build_folder(tmp_path: Path) -> None:
    cache = AccelCache(tmp_path / "cache")
    key = cache.key(_model_files(tmp_path), device="cpu")
    with pytest.raises(RuntimeError, match="conversion crashed"), cache.build(key) as (folder, manifest):
        (folder / "unet.bin").write_bytes(b"half")
        manifest["openvino"] = True
        raise RuntimeError("conversion crashed")
    assert list(cache.root.iterdir()) == []
    assert cache.read(key) is None
    assert (cache.stats.builds, cache.stats.rebuilt_corrupt) == (0, 0)


def test_a_build_lists_its_files_and_a_later_read_checks_them(tmp_path: Path) -> None:
    cache = AccelCache(tmp_path / "cache")
    key = cache.key(_model_files(tmp_path), device="cpu")
    with cache.build(key) as (folder, manifest):
        (folder / "unet.bin").write_bytes(b"x" * 10)
        manifest["openvino"] = True
    assert [p.name for p in cache.root.iterdir()] == [key]
    read = cache.read(key)
    assert read is not None and read["openvino"] is True
    assert read["files"] == [{"name": "unet.bin", "size": 10}]
    (cache.entry_dir(key) / "unet.bin").write_bytes(b"x" * 9)
    assert cache.read(key) is None
    assert not cache.entry_dir(key).exists()
    assert (cache.stats.hits, cache.stats.builds, cache.stats.rebuilt_corrupt) == (1, 1, 1)


def test_a_manifest_of_another_format_is_not_used(tmp_path: Path) -> None:
    cache = AccelCache(tmp_path / "cache")
    key = cache.key(_model_files(tmp_path), device="cpu")
    with cache.build(key) as (_folder, _manifest):
        pass
    manifest_file = cache.entry_dir(key) / MANIFEST
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    manifest_file.write_text(json.dumps({**manifest, "format": manifest["format"] + 1}), encoding="utf-8")
    assert cache.read(key) is None
    assert cache.stats.rebuilt_corrupt == 1


def test_the_key_follows_the_model_files_the_device_and_the_extra(tmp_path: Path) -> None:
    import os

    cache = AccelCache(tmp_path / "cache")
    folder = _model_files(tmp_path)
    key = cache.key(folder, device="cpu", extra="StableDiffusionPipeline")
    assert cache.key(folder, device="cpu", extra="StableDiffusionPipeline") == key
    assert cache.key(folder, device="cuda", extra="StableDiffusionPipeline") != key
    assert cache.key(folder, device="cpu", extra="StableDiffusionXLPipeline") != key
    (folder / "README.md").write_text("not a model file", encoding="utf-8")
    assert cache.key(folder, device="cpu", extra="StableDiffusionPipeline") == key
    weights = folder / "unet" / "weights.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # rewritten in place, same size
    assert cache.key(folder, device="cpu", extra="StableDiffusionPipeline") != key
