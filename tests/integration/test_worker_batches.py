"""Workers claim quick jobs in batches and store them in one transaction (worker.py ``run_batch``): each job still
ends exactly once, alone when it fails, and not at all when its lease was lost; runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation import worker as worker_module
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.outputs import Finished, commit_successes
from studiolo.domain.generation.worker import Worker
from studiolo.engines.base import CancelCheck, EngineError, GeneratedImage, GenerationRequest, StepCallback
from studiolo.engines.echo import EchoEngine
from studiolo.services import Services, build_services
from tests.helpers import submit

BATCH = 6


class HookEngine(EchoEngine):
    """The echo engine, calling ``hooks[prompt](request)`` before generating a prompt that has a hook."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: dict[str, Callable[[GenerationRequest], None]] = {}

    def generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        hook = self.hooks.get(request.prompt)
        if hook is not None:
            hook(request)
        return super().generate(request, on_step, should_cancel)


@pytest.fixture
def engine() -> HookEngine:
    return HookEngine()


@pytest.fixture
def svc(settings_factory: Any, engine: HookEngine) -> Iterator[Services]:
    # A generous time budget: every claim after the first takes a full batch, however slow the machine.
    settings = settings_factory(claim_batch_max=BATCH, claim_batch_seconds=10.0, max_attempts=3)
    services = build_services(settings, engines={"echo": engine}, upgrade_db=False)
    yield services
    services.close(timeout=10)


def run_all(svc: Services, worker: Worker, stop: threading.Event | None = None) -> list[int]:
    """Batches until none is ready; the size of each claim."""
    sizes: list[int] = []
    while worker.run_once(stop or threading.Event(), models=["echo"], on_claimed=lambda n, _limit: sizes.append(n)):
        pass
    return sizes


def make_worker(svc: Services, worker_id: str = "batch-worker") -> Worker:
    return Worker(worker_id, svc.queue, svc.runner, svc.dispatch, svc.settings)


def statuses(svc: Services, ids: list[str]) -> list[tuple[str, int]]:
    with svc.db.session() as s:
        rows = {j.id: (j.status, j.attempts) for j in s.scalars(select(Job).where(Job.id.in_(ids)))}
    return [rows[i] for i in ids]


def image_count(svc: Services, job_id: str) -> int:
    with svc.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Image).where(Image.job_id == job_id)) or 0)


def stored_originals(svc: Services) -> set[str]:
    root = svc.settings.data_dir / "files"
    return {str(p.relative_to(root)) for p in (root / "images").rglob("*.png")} if (root / "images").exists() else set()


def referenced_originals(svc: Services) -> set[str]:
    with svc.db.session() as s:
        return set(s.scalars(select(Image.original_key)))


def test_quick_jobs_are_claimed_in_batches_and_each_stored_once(svc: Services) -> None:
    ids = [submit(svc, prompt=f"lighthouse {i}", n=2) for i in range(20)]
    events: dict[str, list[str]] = {i: [] for i in ids}
    for job_id in ids:
        svc.events.subscribe(job_id, lambda ev, job_id=job_id: events[job_id].append(ev["type"]))
    sizes = run_all(svc, make_worker(svc))
    # The first job measures the model's pace; then full batches, the rest, and the claim that found nothing.
    assert sizes == [1, BATCH, BATCH, BATCH, 1, 0]
    assert statuses(svc, ids) == [("succeeded", 1)] * 20
    assert all(image_count(svc, i) == 2 for i in ids)
    assert stored_originals(svc) == referenced_originals(svc) and len(referenced_originals(svc)) == 40
    for job_id in ids:
        kinds = [t for t in events[job_id] if t not in ("progress", "preview")]
        assert kinds == ["started", "output", "output", "succeeded"]
    view = svc.generation.get(LOCAL_USER_ID, ids[-1])
    assert view.duration_seconds is not None and view.progress.step == view.progress.total
    assert view.timings is not None and view.timings["queue_wait"] is not None and view.cost > 0


def test_a_job_failing_inside_a_batch_fails_alone(svc: Services, engine: HookEngine) -> None:
    def boom(_request: GenerationRequest) -> None:
        raise EngineError("this prompt cannot be drawn", code="invalid_request", retryable=False)

    engine.hooks["boom"] = boom
    first = submit(svc, prompt="warm-up")
    run_all(svc, make_worker(svc))
    ids = [submit(svc, prompt=p) for p in ("a", "b", "boom", "c", "d")]
    assert run_all(svc, make_worker(svc)) == [5, 0]
    assert statuses(svc, [first, *ids]) == [("succeeded", 1)] * 3 + [("failed", 1)] + [("succeeded", 1)] * 2
    assert image_count(svc, ids[2]) == 0 and all(image_count(svc, i) == 1 for i in ids if i != ids[2])


def test_a_job_whose_lease_was_lost_inside_a_batch_is_not_stored(svc: Services, engine: HookEngine) -> None:
    run_all(svc, make_worker(svc)) if submit(svc, prompt="warm-up") else None
    victim = submit(svc, prompt="victim")
    thief = submit(svc, prompt="thief")
    after = submit(svc, prompt="after")

    def steal(_request: GenerationRequest) -> None:
        # While the batch runs, the victim (already generated, not yet committed) is reaped and taken elsewhere.
        with svc.db.session() as s:
            s.execute(update(Job).where(Job.id == victim).values(lease_owner="another-worker"))

    engine.hooks["thief"] = steal
    assert run_all(svc, make_worker(svc)) == [3, 0]
    assert statuses(svc, [victim, thief, after]) == [("running", 1), ("succeeded", 1), ("succeeded", 1)]
    assert image_count(svc, victim) == 0
    assert stored_originals(svc) == referenced_originals(svc)  # the victim's files were discarded


def test_shutdown_inside_a_batch_hands_the_rest_back_uncharged(svc: Services, engine: HookEngine) -> None:
    run_all(svc, make_worker(svc)) if submit(svc, prompt="warm-up") else None
    stop = threading.Event()
    engine.hooks["second"] = lambda _request: stop.set()
    ids = [submit(svc, prompt=p) for p in ("first", "second", "third", "fourth")]
    assert run_all(svc, make_worker(svc), stop) == [4]  # and no more claims once shutting down
    # "second" saw the shutdown at its first step; the two after it were never started.
    assert statuses(svc, ids) == [("succeeded", 1), ("queued", 0), ("queued", 0), ("queued", 0)]
    assert stored_originals(svc) == referenced_originals(svc)
    assert run_all(svc, make_worker(svc)) == [3, 0]
    assert statuses(svc, ids) == [("succeeded", 1)] * 4


def test_a_batch_that_cannot_be_committed_is_committed_job_by_job(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_all(svc, make_worker(svc)) if submit(svc, prompt="warm-up") else None

    def only_single(db: Any, settings: Any, done: list[Finished], gate: Any = None) -> set[str]:
        if len(done) > 1:
            raise RuntimeError("simulated: the batch's transaction failed")
        return commit_successes(db, settings, done, gate)

    monkeypatch.setattr(worker_module, "commit_successes", only_single)
    ids = [submit(svc, prompt=f"p{i}") for i in range(4)]
    assert run_all(svc, make_worker(svc)) == [4, 0]
    assert statuses(svc, ids) == [("succeeded", 1)] * 4 and all(image_count(svc, i) == 1 for i in ids)


def test_batch_size_follows_the_pace_of_the_models(svc: Services) -> None:
    runner = svc.runner
    assert runner.batch_size(None) == 1  # any model: one at a time
    assert runner.batch_size(["echo"]) == 1  # no pace measured yet
    runner._record_pace("echo", 0.001)
    assert runner.batch_size(["echo"]) == BATCH  # capped by claim_batch_max
    runner._record_pace("slow", 120.0)
    assert runner.batch_size(["echo", "slow"]) == 1  # the slowest model decides
    assert runner.batch_size(["echo", "unknown"]) == 1


def test_one_job_at_a_time_when_batches_are_off(settings_factory: Any, tmp_path: Path) -> None:
    services = build_services(settings_factory(claim_batch_max=1), upgrade_db=False)
    try:
        services.runner._record_pace("echo", 0.0001)
        assert services.runner.batch_size(["echo"]) == 1
        ids = [submit(services, prompt=f"p{i}") for i in range(3)]
        assert run_all(services, make_worker(services)) == [1, 1, 1, 0]
        assert statuses(services, ids) == [("succeeded", 1)] * 3
    finally:
        services.close(timeout=10)
