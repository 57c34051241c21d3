"""torch thread counts per engine and per process (issue 13; engines/threads.py).

The demo model runs on one thread (two threads waiting for each other at every small operation made it 16x
slower on a busy 2-core machine), set in the worker thread for the job only; every process that builds the
engines makes OpenMP threads sleep instead of spinning, before torch is loaded. bench/demo.py measures the
speed; these tests check which counts are in effect, never timings.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch

from studiolo.engines.accel.cpu import physical_cores
from studiolo.engines.base import GenerationRequest, ModelRef, Preview
from studiolo.engines.demo.engine import DEMO_MODEL_ID, DemoEngine
from studiolo.engines.diffusers_engine import DiffusersEngine
from studiolo.engines.threads import process_default_threads, torch_threads
from studiolo.services import default_engines
from studiolo.settings import Settings
from tests.tiny_demo import make_tiny_demo_weights
from tests.tiny_pipeline import make_tiny_sd_pipeline

T = TypeVar("T")
MODEL = ModelRef(id=DEMO_MODEL_ID, engine="demo", source="builtin")


def in_new_thread(body: Callable[[], T]) -> T:
    """``body()`` in a fresh thread, like a worker thread (torch's thread count is per thread)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(body())
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_demo_weights(tmp_path_factory.mktemp("demo"))


def test_torch_threads_sets_the_calling_threads_count_and_restores_it() -> None:
    def body() -> tuple[int, int, int]:
        torch.set_num_threads(3)
        with torch_threads(1) as chosen:
            inside = torch.get_num_threads()
        return chosen, inside, torch.get_num_threads()

    assert in_new_thread(body) == (1, 1, 3)


def test_zero_means_torchs_own_default_for_the_process() -> None:
    default = process_default_threads()

    def body() -> tuple[int, int]:
        torch.set_num_threads(default + 1)  # as another engine's job might have left this thread
        with torch_threads(0) as chosen:
            return chosen, torch.get_num_threads()

    assert in_new_thread(body) == (default, default)


def _threads_seen_by_a_job(engine: DemoEngine, before: int) -> tuple[list[int], int]:
    """The thread counts in effect at each step of a demo job run in a fresh thread that had ``before``."""

    def body() -> tuple[list[int], int]:
        torch.set_num_threads(before)
        seen: list[int] = []

        def on_step(step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
            seen.append(torch.get_num_threads())

        request = GenerationRequest(model=MODEL, prompt="a red square", seeds=[1, 2], width=64, height=64, steps=2)
        engine.generate(request, on_step, lambda: False)
        return seen, torch.get_num_threads()

    return in_new_thread(body)


def test_the_demo_model_runs_on_one_thread_and_gives_the_thread_back(weights: Path) -> None:
    seen, after = _threads_seen_by_a_job(DemoEngine(weights=weights), before=2)
    assert seen == [1, 1, 1, 1]
    assert after == 2  # the worker thread's next job (another engine) starts from its own count


@pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")  # as in test_diffusers_engine.py
def test_a_diffusers_job_runs_with_one_thread_per_physical_core_whatever_its_thread_had(tmp_path: Path) -> None:
    # A worker thread's first torch operation takes the process-wide count of that moment, which a demo job
    # in another worker thread may have set to 1: every engine sets its own count for its jobs (issue 20: one
    # per physical core unless STUDIOLO_TORCH_THREADS says otherwise).
    model = ModelRef(id="tiny", engine="diffusers", source="folder", path=make_tiny_sd_pipeline(tmp_path / "tiny"))
    engine = DiffusersEngine(device="cpu")
    default = engine.threads
    assert default == physical_cores()

    def body() -> tuple[set[int], int]:
        torch.set_num_threads(default + 1)
        seen: set[int] = set()
        request = GenerationRequest(model=model, prompt="a fox", seeds=[1], width=64, height=64, steps=2)
        engine.generate(request, lambda step, total, **_: seen.add(torch.get_num_threads()), lambda: False)
        return seen, torch.get_num_threads()

    assert in_new_thread(body) == ({default}, default + 1)


def test_the_torch_threads_setting_reaches_the_diffusers_engine(tmp_path: Path) -> None:
    engine = default_engines(Settings(data_dir=tmp_path, torch_threads=3))["diffusers"]
    assert isinstance(engine, DiffusersEngine) and engine.threads == 3


def test_the_demo_threads_setting_reaches_the_engine(weights: Path, tmp_path: Path) -> None:
    engines = default_engines(Settings(data_dir=tmp_path, demo_threads=3))
    demo = engines["demo"]
    assert isinstance(demo, DemoEngine) and demo.threads == 3
    default = default_engines(Settings(data_dir=tmp_path))["demo"]
    assert isinstance(default, DemoEngine) and default.threads == 1
    seen, _after = _threads_seen_by_a_job(DemoEngine(weights=weights, threads=3), before=1)
    assert seen == [3, 3, 3, 3]


def test_loading_the_demo_model_logs_the_threads_it_runs_on(
    weights: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    with caplog.at_level(logging.INFO, logger="studiolo.engines.demo.engine"):
        DemoEngine(weights=weights).load(MODEL)
    (line,) = [r.getMessage() for r in caplog.records if "torch thread" in r.getMessage()]
    assert "1 torch thread(s) per job" in line and "STUDIOLO_DEMO_THREADS" in line
    assert "OMP_WAIT_POLICY=PASSIVE" in line


def _policy_in_a_fresh_process(**env: str) -> str:
    code = (
        "import os, sys\n"
        "from studiolo.services import default_engines\n"
        "from studiolo.settings import Settings\n"
        "default_engines(Settings())\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environ)
    return out.stdout.strip()


def test_a_process_that_builds_the_engines_makes_openmp_threads_sleep_before_torch_loads() -> None:
    # `studiolo serve` (API + in-process workers), `studiolo worker` and the CLI all build their engines
    # with default_engines before any job imports torch, which reads OMP_WAIT_POLICY once, when it loads.
    assert _policy_in_a_fresh_process() == "PASSIVE False"
    assert _policy_in_a_fresh_process(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE False"  # an explicit choice wins


def test_settings_refuse_a_negative_thread_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, demo_threads=-1)
