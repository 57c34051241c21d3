"""bench/demo.py keeps running against today's product (issue 13: bench scripts must not rot): its smallest
settings, both parts. It prints figures; nothing here looks at them (no timing assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_demo_bench_runs_with_its_smallest_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.demo", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # Speed: both thread policies, idle and beside the CPU load, and their ratios.
    assert "idle old" in out and "busy new" in out and "threads: old=" in out
    assert "busy: old / new = " in out and "new: busy / idle = " in out
    # Quality: every sampler setting scored against the references, and the contact sheets written.
    for setting in ("euler 1", "heun 1", "midpoint 1", "euler 3"):
        assert f"\n{setting} " in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"demo-euler-00{n}.png" for n in (1, 2, 3)]
