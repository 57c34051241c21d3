"""`studiolo worker` processes take only the jobs of models whose files are on their machine, and follow the
installed models while they run (no restart): through a broker (Redis, RabbitMQ) and on the database-polling
path.

Several machines on one disk: the model's recorded path is relative, so each process looks for the files under
its own working directory (``machine()``), just as one absolute path can exist on one machine and not another.
This test process plays the API machine, which has the files (submitting checks them).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.models import InstalledModel
from studiolo.services import Services
from tests.e2e.conftest import Launcher, Proc, echo_env, echo_services
from tests.helpers import submit, wait_terminal

pytestmark = pytest.mark.slow

# A database of its own on the shared local Redis, flushed before each test.
REDIS_URL = f"{os.environ.get('STUDIOLO_TEST_REDIS', 'redis://localhost:6379')}/12"
RABBIT = os.environ.get("STUDIOLO_TEST_AMQP", "amqp://guest:guest@localhost:5672//")
FILES = "models/painter"  # the recorded path of the models below, relative to each process's working directory
FAST: dict[str, Any] = {
    "lease_seconds": 2.0,
    "heartbeat_seconds": 0.3,
    "retry_backoff_seconds": 0.1,
    "sweep_seconds": 0.5,
    "sweep_grace_seconds": 1.0,
    "worker_poll_seconds": 0.3,
    "worker_refresh_seconds": 0.5,
}


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Services]:
    """The API machine's services (this process): Celery with the broker the test names, or the polling path."""
    monkeypatch.chdir(machine(tmp_path, "api"))
    values: dict[str, Any] = {"dispatch": "inline"}
    if request.param == "redis":
        redis.Redis.from_url(REDIS_URL).flushdb()
        values = {"dispatch": "celery", "broker_url": REDIS_URL}
    elif request.param == "rabbitmq":  # tokens left in its queues by earlier runs cost an empty claim each
        values = {"dispatch": "celery", "broker_url": RABBIT}
    svc = echo_services(tmp_path / "data", **FAST, **values)
    try:
        yield svc
    finally:
        svc.close(timeout=10)


def machine(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    return path


def provision(where: Path, model_id: str) -> None:
    """Put the model's files on a machine."""
    (where / "models" / model_id).mkdir(parents=True, exist_ok=True)


def install(api: Services, model_id: str) -> None:
    """Register a model (run by the echo engine: what matters is where its files are) at ``models/<id>``."""
    provision(Path.cwd(), model_id)
    with api.db.session() as session:
        session.add(InstalledModel(id=model_id, engine="echo", source="folder", path=f"models/{model_id}"))
    api.catalog.models(fresh=True)  # as `models import` does in its own process


def start_worker(launcher: Launcher, api: Services, where: Path, *args: str) -> Proc:
    values = {**FAST, "echo_step_delay": 0.01, "dispatch": api.settings.dispatch}
    if api.settings.dispatch == "celery":
        values["broker_url"] = api.settings.broker_url
    return launcher.start(["worker", *args], echo_env(api.settings.data_dir, **values), where)


def wait_for(predicate: Any, proc: Proc, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.popen.poll() is None, f"worker exited with {proc.popen.returncode}:\n{proc.output()}"
        assert time.monotonic() < deadline, f"{what} after {timeout} s:\n{proc.output()}"
        time.sleep(0.05)


def job(api: Services, job_id: str) -> tuple[str, int]:
    view = api.generation.get(LOCAL_USER_ID, job_id)
    return view.status, view.attempts


def assert_waiting(api: Services, job_ids: list[str], seconds: float = 2.0) -> None:
    """Nobody takes these jobs for ``seconds`` (several polls, sweeps and refreshes): queued, no attempt used."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert [job(api, j) for j in job_ids] == [("queued", 0)] * len(job_ids)
        time.sleep(0.1)


def succeeded_once(api: Services, job_ids: list[str], proc: Proc) -> None:
    views = [wait_terminal(api, j, timeout=60) for j in job_ids]
    assert [(v.status, v.attempts) for v in views] == [("succeeded", 1)] * len(job_ids), proc.output()


@pytest.mark.parametrize("api", ["redis", "inline"], indirect=True)
def test_a_worker_without_a_models_files_leaves_its_jobs_to_a_worker_that_has_them(
    api: Services, launcher: Launcher, tmp_path: Path
) -> None:
    install(api, "painter")
    bare = start_worker(launcher, api, machine(tmp_path, "gpu-a"), "--queues", "echo,painter")
    # The worker is up and taking jobs (of the model it has).
    succeeded_once(api, [submit(api)], bare)
    painter = [submit(api, model="painter") for _ in range(3)]
    assert_waiting(api, painter)  # before the fix: claimed and failed for good with model_unavailable
    assert f"model painter has no files on this machine (nothing at {FILES})" in bare.output()

    provisioned = machine(tmp_path, "gpu-b")
    provision(provisioned, "painter")
    complete = start_worker(launcher, api, provisioned)
    succeeded_once(api, painter, complete)
    assert bare.stop() == 0 and complete.stop() == 0, bare.output() + complete.output()


@pytest.mark.parametrize("api", ["redis", "rabbitmq", "inline"], indirect=True)
def test_workers_take_up_models_installed_or_provisioned_after_they_started(
    api: Services, launcher: Launcher, tmp_path: Path
) -> None:
    gpu_a, gpu_b = machine(tmp_path, "gpu-a"), machine(tmp_path, "gpu-b")
    every_model = start_worker(launcher, api, gpu_a)
    chosen = start_worker(launcher, api, gpu_b, "--queues", "sketch")
    succeeded_once(api, [submit(api)], every_model)
    wait_for(lambda: "model sketch is not installed" in chosen.output(), chosen, "no warning")

    # Installed after the worker without --queues started: it serves it at its next refresh.
    provision(gpu_a, "painter")
    install(api, "painter")
    succeeded_once(api, [submit(api, model="painter")], every_model)

    # Named by --queues but without files on gpu-b (and gpu-a has none either): the job waits ...
    install(api, "sketch")
    sketch = [submit(api, model="sketch")]
    wait_for(lambda: "model sketch has no files on this machine" in chosen.output(), chosen, "no warning")
    assert_waiting(api, sketch, seconds=1.5)
    # ... until the files arrive on gpu-b.
    provision(gpu_b, "sketch")
    succeeded_once(api, sketch, chosen)
    assert "model sketch is available now" in chosen.output()

    # Files deleted from gpu-a: its worker stops taking the model's jobs at its next refresh.
    shutil.rmtree(gpu_a / FILES)
    wait_for(lambda: "model painter has no files on this machine" in every_model.output(), every_model, "no warning")
    assert_waiting(api, [submit(api, model="painter")], seconds=1.0)
    assert every_model.stop() == 0 and chosen.stop() == 0, every_model.output() + chosen.output()
