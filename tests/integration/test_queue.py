"""The jobs table as a queue: claim order, atomic claims, leases, retries, cancel, timeouts, shutdown."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from studiolo.db.base import utcnow
from studiolo.domain.generation import worker as worker_module
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.outputs import commit_successes
from studiolo.engines.base import CancelCheck, EngineError, GeneratedImage, GenerationRequest, StepCallback
from studiolo.engines.echo import EchoEngine
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from tests.helpers import drain, submit, wait_terminal

OTHER_USER = "00000000-0000-7000-8000-0000000000b2"


def _add_user(services: Services, user_id: str) -> None:
    from studiolo.domain.accounts.models import User

    with services.db.session() as s:
        s.add(User(id=user_id, email=f"{user_id}@example.test"))


def claim_concurrently(take: Callable[[str], list[str]]) -> list[str]:
    """Six threads, each calling ``take(its worker id)`` until it returns nothing; every id they took."""
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        while ids := take(f"w{n}"):
            with lock:
                claimed.extend(ids)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return claimed


def test_claim_order_priority_then_round_robin_then_age(services: Services) -> None:
    _add_user(services, OTHER_USER)
    a1 = submit(services, prompt="a1")
    a2 = submit(services, prompt="a2")
    a3 = submit(services, prompt="a3")
    b1 = submit(services, owner=OTHER_USER, prompt="b1")
    urgent = submit(services, owner=OTHER_USER, prompt="urgent", system_priority=5)
    order = []
    while (job := services.queue.claim("w")) is not None:
        order.append(job.id)
    # System priority first; then users take turns: B was served (urgent) before A (a1), so b1 before a2.
    assert order == [urgent, a1, b1, a2, a3]


def test_model_affinity_between_users(services: Services) -> None:
    _add_user(services, OTHER_USER)
    other = submit(services, prompt="other model")
    with services.db.session() as s:
        s.execute(update(Job).where(Job.id == other).values(model_id="other-model"))
    loaded = submit(services, owner=OTHER_USER, prompt="loaded model")
    job = services.queue.claim("w", loaded_models=["echo"])
    assert job is not None and job.id == loaded  # same priority and rank: the loaded model wins over age


def test_concurrent_claims_take_each_job_exactly_once(services: Services) -> None:
    ids = {submit(services, prompt=f"p{i}") for i in range(60)}
    claimed = claim_concurrently(lambda worker: [job.id] if (job := services.queue.claim(worker)) else [])
    assert Counter(claimed) == Counter(ids)


def test_a_batch_claim_keeps_the_turn_order(services: Services) -> None:
    _add_user(services, OTHER_USER)
    a = [submit(services, prompt=f"a{i}") for i in range(4)]
    b = [submit(services, owner=OTHER_USER, prompt=f"b{i}") for i in range(2)]
    urgent = submit(services, owner=OTHER_USER, prompt="urgent", system_priority=5)
    first = services.queue.claim_batch("w", 5)
    # System priority first; then users take turns (B was served by urgent, so A goes next), oldest first within a user.
    assert [j.id for j in first] == [urgent, a[0], b[0], a[1], b[1]]
    assert all(j.status == "running" and j.lease_owner == "w" and j.attempts == 1 for j in first)
    assert all(j.started_at is not None and j.lease_expires_at is not None for j in first)
    assert [j.id for j in services.queue.claim_batch("w", 5)] == a[2:]
    assert services.queue.claim_batch("w", 5) == []


def test_a_batch_claim_takes_only_ready_jobs_of_the_asked_models(services: Services) -> None:
    later = submit(services, prompt="later")
    other = submit(services, prompt="other model")
    ready = [submit(services, prompt=f"r{i}") for i in range(2)]
    with services.db.session() as s:
        s.execute(update(Job).where(Job.id == later).values(run_after=utcnow() + timedelta(hours=1)))
        s.execute(update(Job).where(Job.id == other).values(model_id="other-model"))
    assert [j.id for j in services.queue.claim_batch("w", 10, models=["echo"])] == ready
    assert [j.id for j in services.queue.claim_batch("w", 10)] == [other]


def test_concurrent_batch_claims_take_each_job_exactly_once(services: Services) -> None:
    _add_user(services, OTHER_USER)
    ids = {submit(services, prompt=f"p{i}") for i in range(80)} | {
        submit(services, owner=OTHER_USER, prompt=f"q{i}") for i in range(40)
    }
    claimed = claim_concurrently(lambda worker: [job.id for job in services.queue.claim_batch(worker, 7)])
    assert Counter(claimed) == Counter(ids)


def test_expired_lease_is_requeued_then_dead_lettered(settings_factory: Any) -> None:
    settings = settings_factory(lease_seconds=0.3, heartbeat_seconds=0.1, max_attempts=2)
    svc = build_services(settings, upgrade_db=False)
    try:
        job_id = submit(svc)
        for attempt in (1, 2):
            job = svc.queue.claim(f"dead-worker-{attempt}")
            assert job is not None and job.id == job_id and job.attempts == attempt
            time.sleep(0.35)  # the worker "died": no heartbeat
            reaped = svc.queue.reap_expired()
            assert [r.id for r in reaped] == [job_id]
            with svc.db.session() as s:  # skip the backoff delay
                s.execute(update(Job).where(Job.id == job_id).values(run_after=utcnow()))
        view = svc.generation.get("00000000-0000-7000-8000-000000000001", job_id)
        assert view.status == "failed" and view.error is not None and view.error.code == "worker_lost"
    finally:
        svc.close()


class FlakyEngine(EchoEngine):
    """Fails the first ``failures`` generations with a retryable error."""

    def __init__(self, failures: int, retryable: bool = True):
        super().__init__()
        self.failures = failures
        self.retryable = retryable
        self.calls = 0

    def generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        self.calls += 1
        if self.calls <= self.failures:
            raise EngineError("simulated GPU hiccup", code="out_of_memory", retryable=self.retryable)
        return super().generate(request, on_step, should_cancel)


@pytest.mark.parametrize(
    ("failures", "retryable", "status", "attempts"),
    [
        (2, True, "succeeded", 3),
        (3, True, "failed", 3),
        (1, False, "failed", 1),
    ],
)
def test_retries_with_backoff_until_max_attempts(
    settings_factory: Any, failures: int, retryable: bool, status: str, attempts: int
) -> None:
    settings = settings_factory(max_attempts=3, retry_backoff_seconds=0.01)
    svc = build_services(settings, engines={"echo": FlakyEngine(failures, retryable)}, upgrade_db=False)
    try:
        job_id = submit(svc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            drain(svc)
            view = svc.generation.get("00000000-0000-7000-8000-000000000001", job_id)
            if view.status in ("succeeded", "failed"):
                break
            time.sleep(0.02)
        assert (view.status, view.attempts) == (status, attempts)
        if status == "failed":
            assert view.error is not None and view.error.code == "out_of_memory"
    finally:
        svc.close()


def test_cancel_running_job_stops_at_next_step(settings_factory: Settings) -> None:
    settings = settings_factory(echo_step_delay=0.05)  # type: ignore[operator]
    svc = build_services(settings, upgrade_db=False)
    try:
        svc.start_workers(1)
        job_id = submit(svc, steps=150)
        deadline = time.monotonic() + 10
        while svc.generation.get("00000000-0000-7000-8000-000000000001", job_id).progress.step < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        svc.generation.cancel("00000000-0000-7000-8000-000000000001", job_id)
        view = wait_terminal(svc, job_id, timeout=10)
        assert view.status == "canceled"
        assert view.progress.step < 150 and view.outputs == []
    finally:
        svc.close()


def test_job_timeout_fails_with_code(settings_factory: Any) -> None:
    svc = build_services(settings_factory(echo_step_delay=0.05, job_timeout_seconds=0.2), upgrade_db=False)
    try:
        job_id = submit(svc, steps=150)
        drain(svc)
        view = svc.generation.get("00000000-0000-7000-8000-000000000001", job_id)
        assert view.status == "failed" and view.error is not None and view.error.code == "timeout"
    finally:
        svc.close()


def test_shutdown_hands_running_job_back_without_charging_an_attempt(settings_factory: Any) -> None:
    svc = build_services(settings_factory(echo_step_delay=0.05), upgrade_db=False)
    try:
        pool = svc.start_workers(1)
        job_id = submit(svc, steps=150)
        deadline = time.monotonic() + 10
        while svc.generation.get("00000000-0000-7000-8000-000000000001", job_id).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pool.stop(timeout=10)
        view = svc.generation.get("00000000-0000-7000-8000-000000000001", job_id)
        assert (view.status, view.attempts) == ("queued", 0)
    finally:
        svc.close()


def test_enqueue_wakes_an_idle_worker(settings_factory: Any) -> None:
    # With a 60 s polling fallback, the job can only finish within the wait below if submit woke the worker.
    svc = build_services(settings_factory(worker_poll_seconds=60.0), upgrade_db=False)
    try:
        svc.start_workers(1)
        time.sleep(0.2)  # let the worker go idle
        job_id = submit(svc)
        assert wait_terminal(svc, job_id, timeout=20).status == "succeeded"
    finally:
        svc.close()


def test_worker_that_lost_its_lease_does_not_store_outputs(services: Services) -> None:
    job_id = submit(services, n=2)
    stale = services.queue.claim("slow-worker")
    assert stale is not None
    with services.db.session() as s:  # the slow worker's lease ran out and the job was reaped
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    services.queue.reap_expired()
    with services.db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(run_after=utcnow()))
    assert drain(services, "fast-worker") == 1
    # Now the slow worker finishes its (stale) run: it must neither add rows nor leave files.
    services.runner.run(stale, "slow-worker", threading.Event())
    view = services.generation.get("00000000-0000-7000-8000-000000000001", job_id)
    assert view.status == "succeeded" and len(view.outputs) == 2
    page = services.gallery.list("00000000-0000-7000-8000-000000000001")
    assert len(page.items) == 2
    keys = set(services.store.iter_keys("images/"))  # type: ignore[attr-defined]
    assert len(keys) == 2


def test_failed_row_insert_leaves_no_files_and_retries(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = submit(services, n=2)
    calls = {"n": 0}

    def failing_commit(*args: Any, **kwargs: Any) -> set[str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away mid-commit")
        return commit_successes(*args, **kwargs)

    monkeypatch.setattr(worker_module, "commit_successes", failing_commit)
    assert drain(services) == 1
    view = services.generation.get("00000000-0000-7000-8000-000000000001", job_id)
    assert view.status == "queued" and view.error is not None and view.error.code == "storage_error"
    assert list(services.store.iter_keys("images/")) == [] and list(services.store.iter_keys("thumbs/")) == []
    with services.db.session() as s:  # skip the backoff
        s.execute(update(Job).where(Job.id == job_id).values(run_after=utcnow()))
    drain(services)
    view = services.generation.get("00000000-0000-7000-8000-000000000001", job_id)
    assert view.status == "succeeded" and view.attempts == 2 and len(view.outputs) == 2
    assert len(list(services.store.iter_keys("images/"))) == 2
