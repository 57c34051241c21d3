"""Workers take only the jobs of models whose files they have (domain/generation/served.py), and a job whose
model's files vanish on the worker running it goes to another worker, or fails clearly when none has them.

The workers here are in-process ``Worker`` objects driven by hand; another machine is a liveness row of another
host. The same behaviour across real processes and a broker: tests/e2e/test_worker_models.py.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.models import InstalledModel, Job, WorkerRecord
from studiolo.domain.generation.served import ServedModels
from studiolo.domain.generation.worker import Worker
from studiolo.errors import ModelUnavailable
from studiolo.services import Services, build_services
from tests.helpers import submit

MODEL = "painter"


def install(services: Services, path: Path, model_id: str = MODEL) -> None:
    """An installed model run by the echo engine: what matters here is whether its files are on the machine."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model_index.json").write_text("{}")
    with services.db.session() as session:
        session.add(InstalledModel(id=model_id, engine="echo", source="folder", path=str(path)))


def other_machine(services: Services, worker_id: str, models: list[str] | None) -> None:
    """A live worker on another host that advertises ``models`` (None: any model)."""
    with services.db.session() as session:
        session.add(WorkerRecord(id=worker_id, hostname=worker_id.split(":")[0], pid=1, models=models))


def worker(services: Services, worker_id: str, served: ServedModels | None) -> Worker:
    return Worker(worker_id, services.queue, services.runner, services.dispatch, services.settings, served)


def job_row(services: Services, job_id: str) -> Job:
    with services.db.session() as session:
        job = session.get_one(Job, job_id)
        session.expunge(job)
        return job


def run_when_due(w: Worker, timeout: float = 5.0) -> bool:
    """``run_once`` until it runs a job (a retried job waits out its back-off) or ``timeout`` passes."""
    stop = threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w.run_once(stop):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def quick(settings_factory: Any) -> Any:
    # A long lease keeps the other machines' liveness rows (written once) live for the whole test.
    settings = settings_factory(retry_backoff_seconds=0.05, max_attempts=3, lease_seconds=60.0, heartbeat_seconds=1.0)
    svc = build_services(settings, upgrade_db=False)
    yield svc
    svc.close(timeout=10)


def test_the_served_models_are_those_asked_for_whose_files_are_here(
    services: Services, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = tmp_path / "models" / MODEL
    everything = ServedModels(services.catalog)
    chosen = ServedModels(services.catalog, [MODEL, "sketch", "echo"])
    assert MODEL not in everything.current() and "echo" in (everything.refresh()[0])

    with caplog.at_level(logging.WARNING, logger="studiolo.domain.generation.served"):
        chosen.refresh()
    assert chosen.current() == ["echo"]
    assert "model painter is not installed" in caplog.text and "model sketch is not installed" in caplog.text

    install(services, files)
    shutil.rmtree(files)  # installed, but its files are not on this machine
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="studiolo.domain.generation.served"):
        assert everything.refresh() == (set(), set())
        chosen.refresh()
        chosen.refresh()  # no news: no second warning
    assert MODEL not in everything.current() and chosen.current() == ["echo"]
    missing = f"model painter has no files on this machine (nothing at {files})"
    assert caplog.text.count(missing) == 2, caplog.text  # once per worker list, naming the model and the path

    changes: list[tuple[set[str], set[str]]] = []
    chosen.on_change(lambda added, removed: changes.append((added, removed)))
    files.mkdir(parents=True)  # the files arrive: the next refresh serves the model, no restart needed
    assert everything.refresh() == ({MODEL}, set())
    assert chosen.refresh() == ({MODEL}, set()) and chosen.current() == [MODEL, "echo"]
    assert changes == [({MODEL}, set())]

    shutil.rmtree(files)
    assert chosen.refresh() == (set(), {MODEL})
    assert changes[-1] == (set(), {MODEL})


def test_a_worker_never_claims_a_model_it_has_no_files_for(services: Services, tmp_path: Path) -> None:
    files = tmp_path / "models" / MODEL
    install(services, files)
    job_id = submit(services, model=MODEL)  # the API machine has the files
    shutil.rmtree(files)  # this worker's machine does not
    served = ServedModels(services.catalog)
    served.refresh()
    assert not run_when_due(worker(services, "gpu-1:1:a:0", served), timeout=0.3)
    assert (job_row(services, job_id).status, job_row(services, job_id).attempts) == ("queued", 0)

    files.mkdir(parents=True)
    served.refresh()
    assert run_when_due(worker(services, "gpu-1:1:a:0", served))
    assert (job_row(services, job_id).status, job_row(services, job_id).attempts) == ("succeeded", 1)


def test_a_ready_job_of_a_model_a_worker_does_not_serve_does_not_keep_it_awake(
    services: Services, tmp_path: Path
) -> None:
    files = tmp_path / "models" / MODEL
    install(services, files)
    submit(services, model=MODEL)
    served = ServedModels(services.catalog, ["echo"])
    served.refresh()
    # It cannot claim the ready job, so it sleeps its poll interval instead of polling again at once.
    assert worker(services, "gpu-1:1:a:0", served).idle_wait() == services.settings.worker_poll_seconds


def test_files_vanishing_under_a_worker_send_the_job_to_another_that_has_them(quick: Services, tmp_path: Path) -> None:
    files = tmp_path / "models" / MODEL
    install(quick, files)
    served = ServedModels(quick.catalog)
    served.refresh()  # the files were there when this worker last looked
    other_machine(quick, "gpu-2:7:b:0", [MODEL])
    job_id = submit(quick, model=MODEL, seed=7)
    shutil.rmtree(files)

    gpu1 = worker(quick, "gpu-1:1:a:0", served)
    assert gpu1.run_once(threading.Event())
    job = job_row(quick, job_id)
    # Back in the queue for gpu-2, the attempt charged, the reason kept; gpu-1 stops taking the model at once.
    assert (job.status, job.attempts, job.error_code) == ("queued", 1, "model_unavailable")
    assert str(files) in (job.error_message or "") and "another worker will try" in (job.error_message or "")
    assert MODEL not in served.current()
    assert not run_when_due(gpu1, timeout=0.3)

    files.mkdir(parents=True)  # gpu-2 has the files (this test's processes share one disk)
    assert run_when_due(worker(quick, "gpu-2:7:b:0", None))
    view = quick.generation.get(LOCAL_USER_ID, job_id)
    assert (view.status, view.attempts, view.error) == ("succeeded", 2, None)
    assert [o.seed for o in view.outputs] == [7]


def test_files_vanishing_everywhere_fail_the_job_clearly_after_it_was_retried(quick: Services, tmp_path: Path) -> None:
    files = tmp_path / "models" / MODEL
    install(quick, files)
    first, second = ServedModels(quick.catalog), ServedModels(quick.catalog)
    first.refresh()
    second.refresh()
    other_machine(quick, "gpu-2:7:b:0", [MODEL])
    job_id = submit(quick, model=MODEL)
    shutil.rmtree(files)

    assert worker(quick, "gpu-1:1:a:0", first).run_once(threading.Event())
    assert job_row(quick, job_id).status == "queued"  # gpu-2 advertises the model: it gets its turn
    assert run_when_due(worker(quick, "gpu-2:7:b:0", second))
    view = quick.generation.get(LOCAL_USER_ID, job_id)
    assert (view.status, view.attempts) == ("failed", 2)
    assert view.error is not None and view.error.code == "model_unavailable"
    assert "No other running worker has the files of model 'painter'" in view.error.message
    assert str(files) in view.error.message


def test_a_model_no_worker_can_load_fails_after_max_attempts(quick: Services, tmp_path: Path) -> None:
    # Workers that keep advertising the model (their lists not refreshed yet) cannot bounce the job forever.
    files = tmp_path / "models" / MODEL
    install(quick, files)
    other_machine(quick, "gpu-9:9:z:0", [MODEL])  # never takes the job itself
    job_id = submit(quick, model=MODEL)
    stale = [ServedModels(quick.catalog) for _ in range(3)]
    for served in stale:
        served.refresh()  # lists read while the files were there
    shutil.rmtree(files)
    for n, served in enumerate(stale):
        assert run_when_due(worker(quick, f"gpu-{n}:{n}:x:0", served)), n
    view = quick.generation.get(LOCAL_USER_ID, job_id)
    assert (view.status, view.attempts) == ("failed", 3)
    assert view.error is not None and view.error.code == "model_unavailable"
    assert "No worker found the files of model 'painter' in 3 attempts" in view.error.message


def test_an_in_process_worker_fails_a_job_at_once_when_its_model_files_are_gone(
    services: Services, tmp_path: Path
) -> None:
    # One machine (`studiolo serve`): nobody else could run it, so the job fails now with a clear message.
    files = tmp_path / "models" / MODEL
    install(services, files)
    job_id = submit(services, model=MODEL)
    shutil.rmtree(files)
    assert worker(services, "serve:1:a:0", None).run_once(threading.Event())
    view = services.generation.get(LOCAL_USER_ID, job_id)
    assert (view.status, view.attempts) == ("failed", 1)
    assert view.error is not None and view.error.code == "model_unavailable"
    assert f"missing from {files}" in view.error.message


def test_removing_a_model_fails_its_queued_jobs_and_retrying_one_is_refused(services: Services, tmp_path: Path) -> None:
    # Workers never claim a model that is not installed, so its queued jobs are ended here, not left waiting.
    install(services, tmp_path / "models" / MODEL)
    job_id = submit(services, model=MODEL)
    other = submit(services)
    services.catalog.remove(MODEL)
    view = services.generation.get(LOCAL_USER_ID, job_id)
    assert (view.status, view.attempts) == ("failed", 0)
    assert view.error is not None and view.error.code == "model_unavailable" and "was removed" in view.error.message
    assert job_row(services, other).status == "queued"  # other models' jobs are untouched
    with pytest.raises(ModelUnavailable) as refused:
        services.generation.retry(LOCAL_USER_ID, job_id)
    assert "studiolo models import" in refused.value.message
    assert job_row(services, job_id).status == "failed"


def test_removing_a_model_deletes_its_accelerated_copies_only(services: Services, tmp_path: Path) -> None:
    # A converted model is gigabytes under <data dir>/cache/accel (issue 20); nothing could ever use it again.
    from studiolo.engines.accel.cache import AccelCache

    install(services, tmp_path / "models" / MODEL)
    install(services, tmp_path / "models" / "other", model_id="other")
    cache = AccelCache(services.settings.accel_cache_dir)
    for model_dir in (tmp_path / "models" / MODEL, tmp_path / "models" / "other"):
        with cache.build(cache.key(model_dir, device="cpu")) as (folder, _manifest):
            (folder / "unet.bin").write_bytes(b"converted weights")
    assert len(list(cache.root.iterdir())) == 2
    services.catalog.remove(MODEL)
    left = [json.loads((entry / "manifest.json").read_text())["model_path"] for entry in cache.root.iterdir()]
    assert left == [str(tmp_path / "models" / "other")]
