"""The ledger's properties under any interleaving (issue 15), with Hypothesis: submit, claim, succeed, fail, cancel
(queued or running), retry, a worker lost mid-job (its lease expires and it is reaped: requeued, or dead-lettered
at its last attempt) and an administrator's grant, in any order, keep after every step:

- balance >= 0 and held >= 0, both equal to the ledger's sums;
- balance + held == grants + purchases + adjustments - captures - expiries - refunds;
- held == the credits of the usage records still held; no job captured twice (tests/billing_checks.py);
- the account matches a model of what each step should have done: a submit or retry is accepted exactly when the
  quota and the credits cover it, a success captures, a failure or cancel releases, a lost worker's retry keeps the
  first hold.

One services per test (a fresh database per example is too slow): each example is a new user on the test's plan,
and its teardown ends every job it left, so the queue is empty for the next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import update

from studiolo.db.base import utcnow
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.billing.plans import PlanSpec
from studiolo.domain.generation.models import Job
from studiolo.errors import PaymentRequired
from studiolo.services import Services, build_services
from tests.billing_checks import assert_consistent
from tests.helpers import create_user, drain, submit

QUOTA = 12  # images a month on the test's plan: reached within an example, so refusals happen too
PLAN = PlanSpec(slug="props", name="Props", monthly_images=QUOTA, monthly_credits=0)
_users = count()


@pytest.fixture
def billed(settings_factory: Callable[..., Any]) -> Iterator[Services]:
    # Two attempts: a job's second lost worker dead-letters it, so both ends of a crash are reached.
    svc = build_services(settings_factory(billing="quotas", max_attempts=2), upgrade_db=False)
    svc.billing.create_plan(PLAN, actor_id=LOCAL_USER_ID, origin=Origin())
    yield svc
    svc.close(timeout=10)


@dataclass
class Tracked:
    """A job as the model sees it: its cost, and whether it holds its credits and images now."""

    id: str
    images: int
    status: str = "queued"
    claim: Any = None  # the claimed Job (and its worker id) while running


class Ledger(RuleBasedStateMachine):
    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.user = create_user(services, f"props{next(_users)}@example.com")
        services.billing.assign_plan(self.user, PLAN.slug, actor_id=LOCAL_USER_ID, origin=Origin())
        self.jobs: list[Tracked] = []
        self.workers = count()
        # The model: spendable and held credits, and the images the month's quota counts (held or made).
        self.balance = self.held = self.used = 0

    # -- helpers -----------------------------------------------------------------------------------------------
    def _of(self, status: str) -> list[Tracked]:
        return [j for j in self.jobs if j.status == status]

    def _status(self, job: Tracked) -> str:
        with self.services.db.session() as session:
            return session.get_one(Job, job.id).status

    def _ended(self, job: Tracked, status: str) -> None:
        """The model's settlement of a job that ended ``status`` (an echo job makes every image or none)."""
        job.status, job.claim = status, None
        self.held -= job.images
        if status != "succeeded":
            self.balance += job.images
            self.used -= job.images

    def _charge(self, images: int, do: Callable[[], Any]) -> bool:
        """Run a submit or retry of ``images`` images (as many credits); checks it was refused exactly when the
        quota or the credits fall short, with the right code. True if accepted."""
        expected = "quota_exceeded" if self.used + images > QUOTA else None
        if expected is None and images > self.balance:
            expected = "insufficient_credits"
        try:
            do()
        except PaymentRequired as refusal:
            assert refusal.code == expected, (refusal.code, expected)
            return False
        assert expected is None, f"accepted, but expected {expected}"
        self.balance -= images
        self.held += images
        self.used += images
        return True

    # -- rules -------------------------------------------------------------------------------------------------
    @initialize(amount=st.integers(0, 12))
    def opening_grant(self, amount: int) -> None:
        if amount:
            self.grant(amount)

    @rule(amount=st.integers(1, 6))
    def grant(self, amount: int) -> None:
        self.services.billing.adjust_credits(self.user, amount, reason="props", actor_id=LOCAL_USER_ID, origin=Origin())
        self.balance += amount

    @rule(n=st.integers(1, 3))
    def submit(self, n: int) -> None:
        ids: list[str] = []
        if self._charge(n, lambda: ids.append(submit(self.services, owner=self.user, n=n, size="64x64", steps=2))):
            self.jobs.append(Tracked(ids[0], n))

    @precondition(lambda self: self._of("queued"))
    @rule()
    def claim(self) -> None:
        worker = f"w{next(self.workers)}"
        job = self.services.queue.claim(worker)
        assert job is not None
        tracked = next(j for j in self.jobs if j.id == job.id)
        tracked.status, tracked.claim = "running", (job, worker)

    def _run(self, job: Tracked, *, engine_refuses: bool) -> str:
        """Its worker runs the claimed job to its end; the status it ended with (settled in the model)."""
        claimed, worker = job.claim
        if engine_refuses:  # this claim's copy only: the echo engine refuses 0 steps, as an engine error would
            claimed.params = {**claimed.params, "steps": 0}
        self.services.runner.run(claimed, worker, threading.Event())
        status = self._status(job)
        self._ended(job, status)
        return status

    @precondition(lambda self: self._of("running"))
    @rule(data=st.data(), engine_refuses=st.booleans())
    def finish(self, data: st.DataObject, engine_refuses: bool) -> None:
        """Its worker runs the job to the end: a success, or a failure (the engine refuses it, not retried), or a
        cancel requested while it was claimed."""
        status = self._run(data.draw(st.sampled_from(self._of("running"))), engine_refuses=engine_refuses)
        assert status in (("failed", "canceled") if engine_refuses else ("succeeded", "canceled")), status

    @precondition(lambda self: self._of("running"))
    @rule(data=st.data())
    def lose_worker(self, data: st.DataObject) -> None:
        """The worker dies mid-job: its lease runs out and the reaper requeues the job (still held, not charged
        again) or, at its last attempt, fails it (released)."""
        job = data.draw(st.sampled_from(self._of("running")))
        with self.services.db.session() as session:
            session.execute(
                update(Job).where(Job.id == job.id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        reaped = {r.id: r for r in self.services.queue.reap_expired()}
        if reaped[job.id].requeued:
            with self.services.db.session() as session:  # skip the backoff
                session.execute(update(Job).where(Job.id == job.id).values(run_after=utcnow()))
            job.status, job.claim = "queued", None
        else:
            self._ended(job, "failed")

    @precondition(lambda self: self._of("queued") or self._of("running"))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._of("queued") + self._of("running")))
        self.services.generation.cancel(self.user, job.id)
        if job.status == "queued":
            self._ended(job, "canceled")
        # A running job stops at its next step, or finishes first: ``finish`` reads which.

    @precondition(lambda self: self._of("failed") or self._of("canceled"))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self._of("failed") + self._of("canceled")))
        if self._charge(job.images, lambda: self.services.generation.retry(self.user, job.id)):
            job.status = "queued"

    @rule()
    def drain(self) -> None:
        """A worker takes every queued job and runs it to success (a cancel requested earlier may stop one)."""
        drain(self.services)
        for job in self._of("queued"):
            self._ended(job, self._status(job))

    # -- after every step --------------------------------------------------------------------------------------
    @invariant()
    def books_balance(self) -> None:
        books = assert_consistent(self.services, self.user)
        assert (books.balance, books.held) == (self.balance, self.held)
        assert self.services.billing.usage(self.user).month.used == self.used
        captured = {e.job_id for e in books.of_kind("capture")}
        assert captured == {j.id for j in self.jobs if j.status == "succeeded"}

    def teardown(self) -> None:
        """End every job this example left, so the next example's queue is empty, and check the books once more."""
        for job in self._of("running"):
            self._run(job, engine_refuses=False)
        for job in self._of("queued"):
            if self._status(job) == "queued":
                self.services.generation.cancel(self.user, job.id)
        drain(self.services)
        assert self.services.queue.claim("teardown") is None
        assert assert_consistent(self.services, self.user).held == 0


def test_any_interleaving_keeps_the_ledger_consistent(billed: Services) -> None:
    run_state_machine_as_test(
        lambda: Ledger(billed),
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
