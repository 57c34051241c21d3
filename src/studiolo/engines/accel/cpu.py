"""What this CPU can do fast, and how many threads a job gets (issue 20).

Thread count: one torch/OpenMP (and OpenVINO) thread per *physical* core that this process may run on. SMT siblings
share one core's vector units, so a second thread per core adds contention, not arithmetic, to the dense
convolutions and matrix products that diffusion models are made of.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# CPU flags (as /proc/cpuinfo names them) whose instructions compute in bfloat16 natively: without one, bf16
# is emulated and slower than fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_native_bf16() -> bool:
    """True when the CPU multiplies bfloat16 natively (avx512_bf16 or AMX)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def _usable_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def physical_cores(sys_root: Path = Path("/sys/devices/system/cpu")) -> int:
    """Physical cores among the CPUs this process may use (SMT siblings counted once); at least 1.

    Read from Linux's topology files; elsewhere, or when they cannot be read, the usable CPU count.
    """
    usable = _usable_cpus()
    cores: set[tuple[str, str]] = set()
    for cpu in usable:
        topology = sys_root / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return max(1, len(usable))
        cores.add((package, core))
    return max(1, len(cores))
