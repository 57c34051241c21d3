"""CPU threads for torch: a count per engine, set in the thread that runs a job, and a per-process OpenMP policy.

Why (issue 13): the demo model is made of many small operations, each an OpenMP parallel region that ends in a
barrier. On a 2-core machine whose cores are also busy with other work, two threads wait for each other at every
barrier, spinning while they wait: the issue measured a 25-step job at 40 s on two threads against 2.4 s on one,
and ``python -m bench.demo`` 7.0 s against 2.1 s beside two spinning processes (on an idle machine two threads
were about 1.5x faster). Big models (diffusers on the CPU) gain more from a thread per core, so the count is
chosen per engine, not once per process.

How torch behaves (PyTorch 2.x with OpenMP): ``torch.set_num_threads`` sets the calling thread's OpenMP
thread count and also the process default that other threads pick up at their first parallel operation, once.
A job's count is therefore set in the worker thread that runs it, for that job only (``torch_threads``), and
every engine sets its own, so no engine inherits another's count.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Threads that wait for work sleep instead of spinning: a spinning thread takes a core from the API's event
# loop and from other processes on a shared machine (issue 13). libgomp reads this when torch loads it.
OPENMP_WAIT_POLICY = "PASSIVE"

_default_lock = threading.Lock()
_process_default: int | None = None


def quiet_openmp_waits() -> str:
    """Make OpenMP threads sleep rather than spin while they wait (``OMP_WAIT_POLICY=PASSIVE``).

    Call before anything imports torch (``services.default_engines`` does, at process start); an explicit
    ``OMP_WAIT_POLICY`` in the environment wins. Returns the policy in effect.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", OPENMP_WAIT_POLICY)
    # With torch already loaded the variable as it was then is what counts; it is rarely changed afterwards.
    return os.environ.get("OMP_WAIT_POLICY", "OpenMP's default (spin, then sleep)")


def process_default_threads() -> int:
    """torch's own intra-op thread count for this process (one per CPU unless OMP_NUM_THREADS says otherwise).

    Read once, before ``torch_threads`` first changes anything, so "the default" stays the same afterwards.
    """
    global _process_default
    with _default_lock:
        if _process_default is None:
            import torch

            _process_default = int(torch.get_num_threads())
        return _process_default


def resolve_threads(count: int) -> int:
    """``count`` threads, or torch's process default for 0."""
    return count if count > 0 else process_default_threads()


@contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """Run the block with ``count`` torch intra-op threads in the calling thread (0: torch's process default).

    The previous count of the calling thread is restored afterwards, so a worker thread that runs the demo
    model (1 thread) and then a diffusers model (one per core) gives each its own count
    (tests/unit/test_torch_threads.py). Yields the count in effect.
    """
    import torch

    process_default_threads()  # read before the first change, whatever this engine's count
    wanted = resolve_threads(count)
    previous = int(torch.get_num_threads())
    if previous != wanted:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if previous != wanted:
            torch.set_num_threads(previous)
