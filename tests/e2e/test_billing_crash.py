"""A billed job whose ``studiolo worker`` process is SIGKILLed mid-job is retried by another worker and charged
exactly once (issue 15): the first hold survives the lost worker (no second reserve), the retry's success captures
it once, and the balance falls by the job's cost once. Real worker subprocesses on the test's database (SQLite, or
PostgreSQL when STUDIOLO_TEST_DATABASE_URL names a server)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.billing.plans import PlanSpec
from studiolo.services import Services
from tests.billing_checks import assert_consistent
from tests.e2e.conftest import Launcher, Proc, echo_env, echo_services
from tests.e2e.test_worker_crash import STEPS, WORKER_SETTINGS, wait_terminal, wait_until_running_in
from tests.helpers import create_user, submit

pytestmark = pytest.mark.slow

N = 2
CREDITS = 20


@pytest.fixture
def billing_settings(database_url: str) -> dict[str, Any]:
    return {**WORKER_SETTINGS, "billing": "quotas", **({"database_url": database_url} if database_url else {})}


@pytest.fixture
def services(tmp_path: Path, billing_settings: dict[str, Any]) -> Iterator[Services]:
    svc = echo_services(tmp_path / "data", **billing_settings)
    try:
        yield svc
    finally:
        svc.close(timeout=10)


def start_worker(
    launcher: Launcher, services: Services, tmp_path: Path, settings: dict[str, Any], *, fast: bool = False
) -> Proc:
    env = echo_env(services.settings.data_dir, **{**settings, **({"echo_step_delay": 0.01} if fast else {})})
    return launcher.start(["worker"], env, tmp_path)


def test_killed_worker_then_retry_charges_once(
    launcher: Launcher, services: Services, tmp_path: Path, billing_settings: dict[str, Any]
) -> None:
    plan = PlanSpec(slug="crash", name="Crash", monthly_images=10, monthly_credits=0, max_running_jobs=1)
    services.billing.create_plan(plan, actor_id=LOCAL_USER_ID, origin=Origin())
    user = create_user(services, "payer@example.com")
    services.billing.assign_plan(user, plan.slug, actor_id=LOCAL_USER_ID, origin=Origin())
    services.billing.adjust_credits(user, CREDITS, reason="test", actor_id=LOCAL_USER_ID, origin=Origin())

    job_id = submit(services, owner=user, steps=STEPS, n=N, seed=7)  # 64x64: one credit an image
    held = assert_consistent(services, user)
    assert (held.balance, held.held) == (CREDITS - N, N)

    worker_a = start_worker(launcher, services, tmp_path, billing_settings)
    wait_until_running_in(services, job_id, worker_a)
    worker_a.stop(signal.SIGKILL)

    worker_b = start_worker(launcher, services, tmp_path, billing_settings, fast=True)
    done = wait_terminal(services, job_id)
    assert done.status == "succeeded", (done.error_code, done.error_message, worker_b.output())
    assert done.attempts == 2  # the killed attempt, then the retry

    books = assert_consistent(services, user)
    assert (books.balance, books.held) == (CREDITS - N, 0)  # down by the job's cost, once
    assert len(books.captures_of(job_id)) == 1 and books.captured == N
    assert [e.job_id for e in books.of_kind("reserve")] == [job_id]  # the retry after the crash reserved nothing
    assert [(r.seq, r.state, r.images_used) for r in books.usage] == [(1, "captured", N)]
    assert services.billing.usage(user).month.used == N
    assert worker_b.stop() == 0, worker_b.output()
