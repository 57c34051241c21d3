"""The accelerated CPU path of the diffusers engine (issue 20; engines/accel): which path a model gets and why,
what a job runs on, the torch fallbacks of the OpenVINO modules, threads, settings and the memory it counts.

The engine contract on each path is tests/contract/test_engine_contract.py; the conversion cache is
tests/unit/test_accel_cache.py. One OpenVINO conversion of the tiny model costs ~5 s here: it is made once per
module (``warm``) and each test that loads on the OpenVINO path starts from a copy of that cache.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from studiolo.engines.accel import cpu, gate, plan
from studiolo.engines.accel.openvino_modules import OpenVinoModules, convert, unet_size_factor
from studiolo.engines.accel.plan import OPENVINO_MISSING, Acceleration
from studiolo.engines.base import (
    AdapterRef,
    ControlSpec,
    GenerationRequest,
    LoraSpec,
    ModelLoadError,
    ModelRef,
    Preview,
    ReferenceSpec,
)
from studiolo.engines.diffusers_engine import DiffusersEngine
from studiolo.engines.diffusers_entry import module_bytes
from studiolo.services import default_engines
from studiolo.settings import Settings
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*"),  # as in test_diffusers_engine.py
    pytest.mark.usefixtures("one_torch_thread"),
]


@dataclass(frozen=True)
class Warm:
    model: ModelRef
    cache_dir: Path  # filled by one load of ``model`` on the OpenVINO path (IR files, compiled blobs, gate figures)

    @property
    def entry(self) -> Path:
        (folder,) = [p for p in self.cache_dir.iterdir() if p.is_dir()]
        return folder


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> Warm:
    tmp = tmp_path_factory.mktemp("cpu-accel")
    model = ModelRef(id="tiny", engine="diffusers", source="folder", path=make_tiny_sd_pipeline(tmp / "tiny", seed=0))
    engine = DiffusersEngine(device="cpu", cpu_accel="openvino", accel_cache_dir=tmp / "cache", threads=1)
    engine.load(model)
    assert engine._cache["tiny"].accel.path == "openvino"
    return Warm(model, tmp / "cache")


@pytest.fixture
def cache_copy(warm: Warm, tmp_path: Path) -> Path:
    return Path(shutil.copytree(warm.cache_dir, tmp_path / "cache", copy_function=shutil.copy2))


def _ignore(step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
    """An on_step that takes everything an engine may pass."""


def _engine(cpu_accel: plan.CpuAccel, cache_dir: Path, threads: int = 1) -> DiffusersEngine:
    return DiffusersEngine(device="cpu", cpu_accel=cpu_accel, accel_cache_dir=cache_dir, threads=threads)


def _request(model: ModelRef, **overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {"prompt": "a lighthouse", "seeds": [3, 4], "width": 64, "height": 64, "steps": 2}
    return GenerationRequest(model=model, **{**values, **overrides})


def _arrays(engine: DiffusersEngine, request: GenerationRequest) -> list[np.ndarray]:
    return [np.asarray(a) for _seed, a in engine.generate_arrays(request, _ignore, lambda: False)]


def _accel(engine: DiffusersEngine, model: ModelRef) -> Acceleration:
    engine.load(model)
    return engine._cache[model.id].accel


def _unet_dtype(engine: DiffusersEngine, model: ModelRef) -> torch.dtype:
    dtype: torch.dtype = engine._cache[model.id].base.unet.dtype
    return dtype


# --- the CPU ------------------------------------------------------------------------------------------------------


def _fake_sysfs(root: Path, topology: dict[int, tuple[str, str] | None]) -> Path:
    """``cpuN/topology/{physical_package_id,core_id}`` for each CPU (None: no topology files)."""
    for number, ids in topology.items():
        folder = root / f"cpu{number}" / "topology"
        folder.mkdir(parents=True)
        if ids is not None:
            (folder / "physical_package_id").write_text(f"{ids[0]}\n")
            (folder / "core_id").write_text(f"{ids[1]}\n")
    return root


@pytest.mark.parametrize(
    ("topology", "usable", "expected"),
    [
        # Two cores with two SMT siblings each: the siblings share a core's vector units, counted once.
        pytest.param({0: ("0", "0"), 1: ("0", "1"), 2: ("0", "0"), 3: ("0", "1")}, {0, 1, 2, 3}, 2, id="smt"),
        # Core ids repeat across sockets: (package, core) is what names a core.
        pytest.param({0: ("0", "0"), 1: ("1", "0"), 2: ("0", "1"), 3: ("1", "1")}, {0, 1, 2, 3}, 4, id="sockets"),
        # Only the CPUs this process may run on count (a container limited to one sibling pair: one core).
        pytest.param({0: ("0", "0"), 1: ("0", "1"), 2: ("0", "0"), 3: ("0", "1")}, {0, 2}, 1, id="affinity"),
        # Topology files that cannot be read: the usable CPU count.
        pytest.param({0: ("0", "0"), 1: None, 2: ("0", "1")}, {0, 1, 2}, 3, id="unreadable"),
    ],
)
def test_physical_cores_counts_smt_siblings_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    topology: dict[int, tuple[str, str] | None],
    usable: set[int],
    expected: int,
) -> None:
    monkeypatch.setattr(cpu, "_usable_cpus", lambda: usable)
    assert cpu.physical_cores(sys_root=_fake_sysfs(tmp_path, topology)) == expected


def test_physical_cores_without_a_sysfs_is_the_usable_cpu_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu, "_usable_cpus", lambda: {0, 1, 5})
    assert cpu.physical_cores(sys_root=tmp_path / "missing") == 3


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, True),
        ({"avx2", "amx_bf16", "amx_tile"}, True),
        ({"avx2", "avx512f", "avx512_vnni"}, False),  # AVX-512 without its bf16 extension emulates bf16
        (set(), False),  # no /proc/cpuinfo (macOS)
    ],
)
def test_native_bf16_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, flags: set[str], native: bool) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    assert cpu.has_native_bf16() is native


# --- which path a model gets ----------------------------------------------------------------------------------


def test_off_runs_fp32_as_loaded_and_converts_nothing(warm: Warm, tmp_path: Path) -> None:
    engine = _engine("off", tmp_path / "cache")
    accel = _accel(engine, warm.model)
    assert (accel.path, accel.reason, accel.openvino) == ("fp32", "STUDIOLO_CPU_ACCEL=off", None)
    assert _unet_dtype(engine, warm.model) == torch.float32
    assert not (tmp_path / "cache").exists()


def test_a_pipeline_without_an_accelerated_path_runs_fp32_even_when_forced(tmp_path: Path) -> None:
    """The inpaint-only tiny model (StableDiffusionInpaintPipeline: a 9-channel UNet the converter's example
    inputs do not fit) is run as loaded, and still inpaints."""
    path = make_tiny_sd_pipeline(tmp_path / "tiny-inpaint", seed=1, inpaint=True)
    model = ModelRef(id="tiny-inpaint", engine="diffusers", source="folder", path=path)
    engine = _engine("openvino", tmp_path / "cache")
    accel = _accel(engine, model)
    assert (accel.path, accel.reason) == ("fp32", "StableDiffusionInpaintPipeline has no accelerated path")
    assert _unet_dtype(engine, model) == torch.float32
    assert not (tmp_path / "cache").exists()
    init, mask = Image.new("RGB", (64, 64), "navy"), Image.new("L", (64, 64), 255)
    (image,) = _arrays(engine, _request(model, kind="inpaint", seeds=[1], init_image=init, mask_image=mask))
    assert image.shape == (64, 64, 3)


def test_forced_openvino_without_the_package_fails_the_job_with_a_fix(
    warm: Warm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan, "openvino_available", lambda: False)
    engine = _engine("openvino", tmp_path / "cache")
    with pytest.raises(ModelLoadError) as excinfo:
        engine.generate(_request(warm.model), _ignore, lambda: False)
    assert str(excinfo.value) == OPENVINO_MISSING and "pip install openvino" in str(excinfo.value)
    assert excinfo.value.code == "model_unavailable"
    assert not engine.is_loaded(warm.model.id)


def test_auto_without_openvino_or_bf16_arithmetic_runs_fp32(
    warm: Warm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan, "openvino_available", lambda: False)
    monkeypatch.setattr(plan, "has_native_bf16", lambda: False)
    accel = _accel(_engine("auto", tmp_path / "cache"), warm.model)
    assert (accel.path, accel.reason) == ("fp32", "this CPU has no bf16 arithmetic and OpenVINO is not installed")
    assert not (tmp_path / "cache").exists()


def test_auto_with_every_path_failing_the_gate_reloads_fp32_and_draws_what_off_draws(
    warm: Warm, cache_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The modules were cast to bf16 to measure the bf16 path: a model that ends on fp32 is loaded again, so its
    pictures are exactly those of acceleration off (not bf16 weights computed in fp32)."""
    monkeypatch.setattr(gate, "GATE_PSNR_DB", 1000.0)  # the measured ~54 dB of both paths now fails
    caplog.set_level(logging.WARNING, logger="studiolo.engines.accel.plan")
    engine = _engine("auto", cache_copy)
    accel = _accel(engine, warm.model)
    assert (accel.path, accel.reason) == ("fp32", "no accelerated path passed the quality gate")
    assert accel.openvino is None and accel.extra_bytes() == 0
    assert _unet_dtype(engine, warm.model) == torch.float32
    rejected = [r.getMessage() for r in caplog.records if "fails the quality gate" in r.getMessage()]
    expected = ["openvino", "bf16"] if cpu.has_native_bf16() else ["openvino"]
    assert [message.split()[1] for message in rejected] == expected
    off = _engine("off", tmp_path / "off-cache")
    for kind in ("txt2img", "img2img"):
        request = _request(warm.model, kind=kind, init_image=Image.new("RGB", (64, 64), "teal"))
        assert all(np.array_equal(a, b) for a, b in zip(_arrays(engine, request), _arrays(off, request), strict=True))


def test_a_forced_path_failing_the_gate_is_used_with_a_warning(
    warm: Warm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gate, "GATE_PSNR_DB", 1000.0)
    caplog.set_level(logging.WARNING, logger="studiolo.engines.accel.plan")
    engine = _engine("bf16", tmp_path / "cache")
    accel = _accel(engine, warm.model)
    assert accel.path == "bf16" and accel.quality is not None and not accel.quality.passed
    assert accel.reason == "forced by STUDIOLO_CPU_ACCEL despite failing the quality gate"
    assert _unet_dtype(engine, warm.model) == torch.bfloat16
    assert any(
        "path bf16 fails the quality gate" in r.getMessage() and "forced" in r.getMessage() for r in caplog.records
    )
    (image, _other) = _arrays(engine, _request(warm.model))
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_forced_bf16_runs_in_bf16_even_where_the_cpu_emulates_it(
    warm: Warm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU without avx512_bf16/AMX: forcing bf16 is slow, and says so, but it is bf16 (what the setting asks for and
    what the log line and the gate figures report), not fp32 under another name."""
    monkeypatch.setattr(plan, "has_native_bf16", lambda: False)
    engine = _engine("bf16", tmp_path / "cache")
    accel = _accel(engine, warm.model)
    assert (accel.path, accel.reason) == ("bf16", "forced; this CPU emulates bf16, so it is slower than fp32")
    assert _unet_dtype(engine, warm.model) == torch.bfloat16
    assert accel.quality is not None and accel.quality.psnr_db != float("inf")  # measured in bf16, not fp32 vs fp32


def test_a_conversion_that_fails_runs_fp32_on_auto_and_fails_the_load_when_forced(
    warm: Warm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(base: Any, folder: Path) -> None:
        raise RuntimeError("the converter cannot trace this model")

    monkeypatch.setattr(plan, "convert", broken)
    monkeypatch.setattr(plan, "has_native_bf16", lambda: False)  # auto: OpenVINO is the only candidate
    engine = _engine("auto", tmp_path / "cache")
    accel = _accel(engine, warm.model)
    assert (accel.path, accel.reason) == ("fp32", "acceleration failed: RuntimeError")
    assert len(_arrays(engine, _request(warm.model))) == 2
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no half-built entry
    forced = _engine("openvino", tmp_path / "cache")
    with pytest.raises(ModelLoadError, match="STUDIOLO_CPU_ACCEL=openvino could not be set up for model 'tiny'"):
        forced.load(warm.model)


# --- what a job runs on ---------------------------------------------------------------------------------------


@pytest.fixture
def fp32_base(warm: Warm) -> Any:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(warm.model.path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def modules(warm: Warm) -> OpenVinoModules:
    return OpenVinoModules(warm.entry, threads=1, bf16=cpu.has_native_bf16())


def _adapter(kind: Any, tmp_path: Path) -> AdapterRef:
    return AdapterRef(id=f"a-{kind}", kind=kind, path=tmp_path / f"{kind}.safetensors")


def test_jobs_with_loras_controls_or_a_reference_run_on_the_torch_modules(
    warm: Warm, fp32_base: Any, modules: OpenVinoModules, tmp_path: Path
) -> None:
    accel = Acceleration("openvino", 1, openvino=modules)
    picture = Image.new("RGB", (64, 64), "white")
    plain = _request(warm.model)
    jobs = {
        "plain": (plain, True),
        "lora": (_request(warm.model, loras=[LoraSpec(_adapter("lora", tmp_path), 0.8)]), False),
        "control": (
            _request(warm.model, controls=[ControlSpec(_adapter("controlnet", tmp_path), "canny", picture)]),
            False,
        ),
        "reference": (_request(warm.model, reference=ReferenceSpec(_adapter("ip_adapter", tmp_path), picture)), False),
        # Embeddings are words of the prompt, read by the text encoder (torch either way): the UNet is unchanged.
        "embedding": (_request(warm.model, embeddings=[_adapter("embedding", tmp_path)]), True),
    }
    for name, (request, expected) in jobs.items():
        with accel.active(fp32_base, request) as used:
            assert used is expected, name
            assert ("forward" in vars(fp32_base.unet)) is expected, name
            assert ("decode" in vars(fp32_base.vae)) is expected, name
        assert "forward" not in vars(fp32_base.unet) and "decode" not in vars(fp32_base.vae), name
    with Acceleration("bf16", 1).active(fp32_base, plain) as used:
        assert used is False


@dataclass
class _Runs:
    count: int = 0


@pytest.fixture
def ov_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Runs]:
    """Count inferences the OpenVINO modules run."""
    runs = _Runs()
    real = OpenVinoModules._run

    def counting(self: OpenVinoModules, request: Any, inputs: list[Any], dtype: Any) -> Any:
        runs.count += 1
        return real(self, request, inputs, dtype)

    monkeypatch.setattr(OpenVinoModules, "_run", counting)
    yield runs


def _unet_inputs(base: Any, side: int) -> tuple[Any, Any, Any]:
    generator = torch.Generator().manual_seed(5)
    sample = torch.randn(2, base.unet.config.in_channels, side, side, generator=generator)
    context = torch.randn(2, 77, base.unet.config.cross_attention_dim, generator=generator)
    return sample, torch.tensor(500), context


def test_the_patched_unet_falls_back_to_torch_for_what_the_graph_does_not_cover(
    fp32_base: Any, modules: OpenVinoModules, ov_runs: _Runs
) -> None:
    from diffusers import ControlNetModel

    unet = fp32_base.unet
    factor = unet_size_factor(unet)
    sample, timestep, context = _unet_inputs(fp32_base, 8 * factor)
    controlnet = ControlNetModel.from_unet(unet)
    with torch.inference_mode():
        down, mid = controlnet(
            sample, timestep, context, controlnet_cond=torch.rand(2, 3, 64 * factor, 64 * factor), return_dict=False
        )
        odd_sample, _t, _c = _unet_inputs(fp32_base, 8 * factor + 1)  # not a multiple of the UNet's downsampling
        calls = {
            "covered": ((sample, timestep, context), {}),
            "controlnet": (
                (sample, timestep, context),
                {"down_block_additional_residuals": down, "mid_block_additional_residual": mid},
            ),
            "odd side": ((odd_sample, timestep, context), {}),
        }
        torch_out = {name: unet(*args, **kw, return_dict=False)[0] for name, (args, kw) in calls.items()}
        with modules.patched(fp32_base):
            patched_out = {}
            for name, (args, kw) in calls.items():
                before = ov_runs.count
                patched_out[name] = unet(*args, **kw).sample
                assert ov_runs.count - before == (1 if name == "covered" else 0), name
            as_tuple = unet(sample, timestep, context, return_dict=False)
    for name in ("controlnet", "odd side"):
        assert torch.equal(patched_out[name], torch_out[name]), name
    # The covered call ran in OpenVINO: close to torch (bf16 or f32 inside OpenVINO), not bit-identical.
    covered, reference = patched_out["covered"], torch_out["covered"]
    assert covered.shape == reference.shape and covered.dtype == reference.dtype
    assert 0 < (covered - reference).abs().max() < 0.05 * reference.abs().max()
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], covered)
    # Afterwards the modules are torch's own again.
    assert "forward" not in vars(unet) and torch.equal(unet(sample, timestep, context).sample, reference)


def test_the_patched_vae_decoder_falls_back_to_torch_when_tiled(
    fp32_base: Any, modules: OpenVinoModules, ov_runs: _Runs
) -> None:
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    vae = fp32_base.vae
    with torch.inference_mode():
        reference = vae.decode(latents).sample
        with modules.patched(fp32_base):
            converted = vae.decode(latents).sample
            assert ov_runs.count == 1
            vae.enable_slicing()
            sliced = vae.decode(latents).sample
            vae.disable_slicing()
            assert ov_runs.count == 1
    assert torch.equal(sliced, reference)
    assert 0 < (converted - reference).abs().max() < 0.05


def test_a_conversion_leaves_the_converter_telemetry_switched_off(
    fp32_base: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO's converter reports to Google Analytics through openvino-telemetry (installed with openvino); a
    conversion switches it to the converter's no-op stub, even when the converter was imported with it on."""
    import openvino.tools.ovc.telemetry_stub as stub
    import openvino.tools.ovc.telemetry_utils as telemetry

    # What the converter holds where it was imported with telemetry on (the real package cannot be imported again
    # in this process once a conversion has run: ``without_telemetry`` blocks it).
    monkeypatch.setattr(telemetry, "tm", SimpleNamespace(Telemetry=object))
    convert(fp32_base, tmp_path)
    assert telemetry.tm is stub
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.bin", "unet.xml", "vae_decoder.bin", "vae_decoder.xml"]


# --- what the engine reports --------------------------------------------------------------------------------------


def test_the_load_log_line_names_the_path_and_the_threads(
    warm: Warm, cache_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="studiolo.engines.accel.setup")
    _accel(_engine("openvino", cache_copy, threads=3), warm.model)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "studiolo.engines.accel.setup"]
    assert line.startswith("model tiny on cpu: path openvino, 3 thread(s), quality gate: PSNR "), line
    assert line.endswith(f"; {cpu.physical_cores()} physical core(s) here"), line


def test_the_accelerated_model_counts_openvinos_weights_in_its_size(warm: Warm, cache_copy: Path) -> None:
    engine = _engine("openvino", cache_copy)
    accel = _accel(engine, warm.model)
    entry = engine._cache[warm.model.id]
    weights = sum(p.stat().st_size for p in warm.entry.glob("*.bin"))
    # In memory OpenVINO holds the fp16 IR weights as bf16 (same bytes) or as f32 (twice as many).
    assert accel.extra_bytes() == (weights if cpu.has_native_bf16() else 2 * weights) > 0
    assert entry.size_bytes == module_bytes(*entry.base.components.values()) + accel.extra_bytes()
    assert engine.loaded_bytes() == entry.size_bytes


def test_the_settings_reach_the_diffusers_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, cpu_accel="bf16", torch_threads=3, gpu_compile="max-autotune")
    engine = default_engines(settings)["diffusers"]
    assert isinstance(engine, DiffusersEngine)
    assert (engine.cpu_accel, engine.threads, engine.gpu_compile) == ("bf16", 3, "max-autotune")
    assert engine.accel_cache.root == settings.accel_cache_dir == tmp_path / "cache" / "accel"
    default = default_engines(Settings(data_dir=tmp_path))["diffusers"]
    assert isinstance(default, DiffusersEngine)
    assert (default.cpu_accel, default.threads) == ("auto", cpu.physical_cores())
    monkeypatch.setenv("STUDIOLO_CPU_ACCEL", "openvino")
    monkeypatch.setenv("STUDIOLO_TORCH_THREADS", "2")
    from_env = Settings(data_dir=tmp_path)
    assert (from_env.cpu_accel, from_env.torch_threads) == ("openvino", 2)


def test_the_openvino_path_releases_the_torch_unet_and_reads_it_back_for_a_lora_job(
    warm: Warm, cache_copy: Path, tmp_path: Path
) -> None:
    # OpenVINO holds the UNet itself; torch's copy would make the accelerated model bigger than the fp32 one.
    from tests.tiny_lora import make_kohya_lora

    lora_file = make_kohya_lora(tmp_path / "kohya.safetensors", seed=0)
    lora = LoraSpec(AdapterRef(id="kohya", kind="lora", path=lora_file, format="kohya", sha256="kohya"), 1.0)
    engine = _engine("openvino", cache_copy)
    accel = _accel(engine, warm.model)
    entry = engine._cache[warm.model.id]
    unet = entry.base.unet
    assert accel.torch_unet is not None and accel.torch_unet.released_bytes > 0
    assert all(p.numel() == 0 for p in unet.parameters())
    loaded = entry.size_bytes
    plain = _arrays(engine, _request(warm.model))
    assert all(p.numel() == 0 for p in unet.parameters())  # drawn by OpenVINO: still released

    with_lora = _arrays(engine, _request(warm.model, loras=[lora]))
    assert all(p.numel() > 0 for p in unet.parameters())
    assert not np.array_equal(with_lora[0], plain[0])
    # The budget sees the weights that came back (besides the LoRA's own bytes).
    assert entry.size_bytes - entry.extra_bytes.get("lora", 0) == loaded + module_bytes(unet)
    # They are the model's weights: the bf16 path, whose UNet never left, draws the same LoRA job identically.
    bf16 = _engine("bf16", cache_copy)
    assert np.array_equal(_arrays(bf16, _request(warm.model, loras=[lora]))[0], with_lora[0])
    # And a plain job afterwards is OpenVINO's picture again.
    assert np.array_equal(_arrays(engine, _request(warm.model))[0], plain[0])


def _resident_bytes(path: Path) -> int:
    """Resident bytes of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux-only: the release reads /proc/self/maps")
def test_mapped_weights_are_released_after_a_call_and_read_back_when_touched(tmp_path: Path) -> None:
    import mmap

    from studiolo.engines.accel.openvino_modules import release_mapped_pages

    folder = tmp_path / "ov-cache"
    folder.mkdir()
    blob = folder / "weights.blob"
    blob.write_bytes(bytes(range(256)) * 4096 * 8)  # 8 MiB
    with blob.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        checksum = sum(mapped[i] for i in range(0, len(mapped), 4096))  # touch every page
        assert _resident_bytes(blob) >= 8 * 2**20
        assert release_mapped_pages(folder) >= 8 * 2**20
        assert _resident_bytes(blob) == 0
        assert sum(mapped[i] for i in range(0, len(mapped), 4096)) == checksum  # read back from the file, intact
        assert release_mapped_pages(tmp_path / "elsewhere") == 0
