"""Separate ``studiolo worker`` processes: one killed mid-job (SIGKILL) or stopped (SIGTERM), another finishes.

The job is submitted in-process through the same services the CLI and API use; the workers are real
subprocesses on the same SQLite database, so leases, heartbeats and reaping run across processes for real.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.e2e.conftest import Launcher, Proc, echo_env, echo_services
from tests.helpers import submit

pytestmark = pytest.mark.slow

# Shared by this process and the workers: short leases so a dead worker's job is reaped within seconds.
WORKER_SETTINGS: dict[str, Any] = {
    "echo_step_delay": 0.05,
    "lease_seconds": 2.0,
    "heartbeat_seconds": 0.3,
    "retry_backoff_seconds": 0.1,
    "worker_poll_seconds": 0.5,
}
STEPS = 100  # 5 s of work per attempt: a wide window to kill the worker mid-job
N = 2


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = echo_services(tmp_path / "data", **WORKER_SETTINGS)
    try:
        yield svc
    finally:
        svc.close(timeout=10)


def start_worker(launcher: Launcher, services: Services, tmp_path: Path, *, fast: bool = False) -> Proc:
    """``studiolo worker`` on the shared database; ``fast`` runs the echo engine 5x faster (the finishing worker)."""
    env = echo_env(services.settings.data_dir, **{**WORKER_SETTINGS, **({"echo_step_delay": 0.01} if fast else {})})
    return launcher.start(["worker"], env, tmp_path)


def job_row(services: Services, job_id: str) -> Job:
    with services.db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def wait_until_running_in(services: Services, job_id: str, worker: Proc, timeout: float = 60.0) -> Job:
    """Wait until ``worker`` holds the job's lease and has reported progress."""
    owner_prefix = f"{socket.gethostname()}:{worker.pid}:"
    deadline = time.monotonic() + timeout
    while True:
        job = job_row(services, job_id)
        if job.status == "running" and job.progress_step > 0 and (job.lease_owner or "").startswith(owner_prefix):
            return job
        if worker.popen.poll() is not None:
            raise AssertionError(f"worker exited with {worker.popen.returncode}:\n{worker.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"job not running in worker {worker.pid} after {timeout} s: {job.status}")
        time.sleep(0.05)


def wait_terminal(services: Services, job_id: str, timeout: float = 90.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = job_row(services, job_id)
        if job.status in ("succeeded", "failed", "canceled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")
        time.sleep(0.1)


def assert_exactly_once(services: Services, job_id: str) -> None:
    """n image rows for the job, n files of each kind on disk: nothing lost, duplicated or orphaned."""
    with services.db.session() as session:
        rows = session.scalars(select(Image).where(Image.job_id == job_id).order_by(Image.batch_index)).all()
        assert session.scalar(select(func.count()).select_from(Image)) == N
        assert [r.batch_index for r in rows] == list(range(N))
        assert [r.seed for r in rows] == [7 + k for k in range(N)]
        keys = {r.original_key for r in rows}
        thumb_keys = {key for r in rows for key in r.thumbnail_keys.values()}
    files = services.settings.files_dir
    originals = sorted(p.relative_to(files).as_posix() for p in (files / "images").rglob("*") if p.is_file())
    assert originals == sorted(keys)
    thumbs = sorted(p.relative_to(files).as_posix() for p in (files / "thumbs").rglob("*") if p.is_file())
    assert thumbs == sorted(thumb_keys)  # exactly the thumbnails the rows name (identical sizes share a file)


def test_killed_worker_loses_its_lease_and_another_finishes_the_job(
    launcher: Launcher, services: Services, tmp_path: Path
) -> None:
    job_id = submit(services, steps=STEPS, n=N, seed=7)
    worker_a = start_worker(launcher, services, tmp_path)
    wait_until_running_in(services, job_id, worker_a)

    worker_a.stop(signal.SIGKILL)
    killed = job_row(services, job_id)
    assert killed.status == "running" and killed.progress_step < STEPS  # it really died mid-job
    assert killed.attempts == 1

    worker_b = start_worker(launcher, services, tmp_path, fast=True)
    done = wait_terminal(services, job_id)
    assert done.status == "succeeded", (done.error_code, done.error_message, worker_b.output())
    assert done.attempts == 2
    assert done.lease_owner is None and done.progress_step == STEPS
    view = services.generation.get(done.owner_id, job_id)
    assert view.error is None and [o.seed for o in view.outputs] == [7, 8]
    assert_exactly_once(services, job_id)
    assert worker_b.stop() == 0, worker_b.output()


def test_sigterm_hands_the_running_job_back_and_exits_promptly(
    launcher: Launcher, services: Services, tmp_path: Path
) -> None:
    job_id = submit(services, steps=STEPS, n=N, seed=7)
    worker_a = start_worker(launcher, services, tmp_path)
    wait_until_running_in(services, job_id, worker_a)

    # Generous bound: "promptly" means at the job's next step, not after the remaining seconds of work.
    assert worker_a.stop(signal.SIGTERM, timeout=15) == 0, worker_a.output()
    handed_back = job_row(services, job_id)
    assert handed_back.status == "queued", handed_back.status
    assert handed_back.attempts == 0 and handed_back.lease_owner is None
    assert handed_back.progress_step == 0  # queued again from the start, not "17 of 100"
    with services.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 0

    worker_b = start_worker(launcher, services, tmp_path, fast=True)
    done = wait_terminal(services, job_id)
    assert done.status == "succeeded", (done.error_code, done.error_message, worker_b.output())
    assert done.attempts == 1
    assert_exactly_once(services, job_id)
    assert worker_b.stop() == 0, worker_b.output()
