"""Billing's core on both databases: a plan's quota and credits are held at submit, captured on success, released
on failure and cancel, and a retry reserves again (issue 15)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from studiolo.domain.accounts.audit import Origin
from studiolo.errors import Forbidden, PaymentRequired
from studiolo.services import Services, build_services
from tests.helpers import create_user, drain, submit


@pytest.fixture
def billed(settings_factory: Callable[..., Any]) -> Iterator[Services]:
    svc = build_services(settings_factory(billing="quotas"), upgrade_db=False)
    yield svc
    svc.close(timeout=10)


def _user(services: Services, plan: str = "free") -> str:
    user_id = create_user(services, "payer@example.com")
    services.billing.assign_plan(user_id, plan, actor_id=None, origin=Origin())
    return user_id


def test_a_job_holds_then_captures_its_credits(billed: Services) -> None:
    user = _user(billed, "basic")
    start = billed.billing.summary(user)
    assert start.balance == 1000 and start.plan.slug == "basic"
    submit(billed, owner=user, prompt="a cat", n=2, size="512x512", steps=25)
    held = billed.billing.summary(user)
    assert (held.balance, held.held, held.usage.month.used) == (998, 2, 2)
    drain(billed)
    done = billed.billing.summary(user)
    assert (done.balance, done.held, done.usage.month.used) == (998, 0, 2)
    kinds = [e.kind for e in billed.billing.ledger(user).items]
    assert kinds == ["capture", "reserve", "grant", "expiry", "grant"]  # free's grant expired on the change


def test_quota_plan_and_credit_refusals(billed: Services) -> None:
    user = _user(billed, "free")
    with pytest.raises(Forbidden) as forbidden:
        submit(billed, owner=user, prompt="big", size="2048x1024")
    assert forbidden.value.code == "plan_forbids" and forbidden.value.details["field"] == "size"
    submit(billed, owner=user, prompt="a", n=4, size="512x512", steps=25)
    with pytest.raises(PaymentRequired) as quota:
        submit(billed, owner=user, prompt="b", n=2, size="512x512", steps=25)
    assert quota.value.code == "quota_exceeded"
    assert quota.value.details["limit"] == 5 and quota.value.details["used"] == 4
    billed.billing.adjust_credits(user, -46, reason="test", actor_id=None, origin=Origin())
    with pytest.raises(PaymentRequired) as credits:
        submit(billed, owner=user, prompt="c", n=1, size="1024x1024", steps=25)
    assert credits.value.code == "insufficient_credits"


def test_cancel_releases_and_retry_reserves_again(billed: Services) -> None:
    user = _user(billed, "basic")
    job_id = submit(billed, owner=user, prompt="a cat", size="512x512", steps=25)
    billed.generation.cancel(user, job_id)
    after_cancel = billed.billing.summary(user)
    assert (after_cancel.balance, after_cancel.held, after_cancel.usage.month.used) == (1000, 0, 0)
    billed.generation.retry(user, job_id)
    assert billed.billing.summary(user).held == 1
    drain(billed)
    final = billed.billing.summary(user)
    assert (final.balance, final.held) == (999, 0)


def test_partial_capture_takes_only_the_images_made(billed: Services) -> None:
    user = _user(billed, "basic")
    job_id = submit(billed, owner=user, prompt="four", n=4, size="512x512", steps=25)
    with billed.db.session() as session:
        billed.billing.settle(session, {job_id: 1})  # a batch of 4 that made 1
        billed.billing.settle(session, {job_id: 4})  # settling again changes nothing
    summary = billed.billing.summary(user)
    assert (summary.balance, summary.held, summary.usage.month.used) == (999, 0, 1)
    kinds = [(e.kind, e.amount, e.held) for e in billed.billing.ledger(user).items[:2]]
    assert kinds == [("release", 3, -3), ("capture", 0, -1)]


def test_an_administrator_is_never_refused_and_pays_nothing(billed: Services) -> None:
    admin = create_user(billed, "boss@example.com", role="admin")
    billed.billing.assign_plan(admin, "free", actor_id=None, origin=Origin())
    for _ in range(3):
        submit(billed, owner=admin, prompt="x", n=4, size="512x512", steps=25)
    summary = billed.billing.summary(admin)
    assert summary.exempt and summary.balance == 50 and summary.usage.month.used == 12


def test_lost_worker_keeps_the_hold_and_dead_letter_releases_it(billed: Services) -> None:
    user = _user(billed, "basic")
    job_id = submit(billed, owner=user, prompt="a cat", size="512x512", steps=25)
    from datetime import timedelta

    from studiolo.db.base import utcnow
    from studiolo.domain.generation.models import Job

    for attempt in range(billed.settings.max_attempts):
        claimed = billed.queue.claim(f"w{attempt}")
        assert claimed is not None and claimed.id == job_id
        with billed.db.session() as session:
            job = session.get_one(Job, job_id)
            job.lease_expires_at = utcnow() - timedelta(seconds=1)
            job.run_after = utcnow()
        billed.queue.reap_expired()
        if attempt < billed.settings.max_attempts - 1:
            assert billed.billing.summary(user).held == 1  # requeued after a lost worker: still held, not again
            with billed.db.session() as session:
                session.get_one(Job, job_id).run_after = utcnow()
    summary = billed.billing.summary(user)
    assert (summary.balance, summary.held, summary.usage.month.used) == (1000, 0, 0)


def test_reconcile_settles_jobs_that_ended_unsettled(billed: Services) -> None:
    from studiolo.domain.generation.models import Job

    user = _user(billed, "basic")
    job_id = submit(billed, owner=user, prompt="a cat", size="512x512", steps=25)
    with billed.db.session() as session:  # ended by a path that did not settle
        session.get_one(Job, job_id).status = "failed"
    assert billed.billing.reconcile() == 1
    assert billed.billing.reconcile() == 0
    assert billed.billing.summary(user).held == 0


def test_a_new_period_expires_the_last_grant_and_grants_again(billed: Services) -> None:
    from datetime import timedelta

    from studiolo.db.base import utcnow
    from studiolo.domain.billing.models import BillingAccount

    user = _user(billed, "basic")
    submit(billed, owner=user, prompt="a", size="512x512", steps=25)
    drain(billed)
    billed.billing.adjust_credits(user, 7, reason="goodwill", actor_id=None, origin=Origin())
    with billed.db.session() as session:  # the period began 40 days ago
        account = session.get_one(BillingAccount, user)
        account.anchor_at -= timedelta(days=40)
        account.granted_period_start = account.anchor_at
    summary = billed.billing.summary(user)
    # 999 plan credits left expired, the 7 given by hand did not, and the new period's 1000 arrived.
    assert summary.balance == 1007 and summary.expiring == 1000
    assert summary.period_start <= utcnow() < summary.period_end
    assert [e.kind for e in billed.billing.ledger(user).items[:2]] == ["grant", "expiry"]


def test_switching_modes_keeps_balances(settings_factory: Callable[..., Any]) -> None:
    on = build_services(settings_factory(billing="quotas"), upgrade_db=False)
    try:
        user = _user(on, "basic")
        on.billing.adjust_credits(user, 5, reason="gift", actor_id=None, origin=Origin())
    finally:
        on.close(timeout=10)
    off = build_services(settings_factory(billing="off"), upgrade_db=False)
    try:
        submit(off, owner=user, prompt="free for all", n=8, size="512x512", steps=25)
        assert off.queue.gate is None and off.billing.summary(user).balance == 1005
    finally:
        off.close(timeout=10)
    again = build_services(settings_factory(billing="quotas"), upgrade_db=False)
    try:
        assert again.billing.summary(user).balance == 1005
        assert again.billing.usage(user).month.used == 0  # nothing was recorded while billing was off
    finally:
        again.close(timeout=10)


def test_usage_older_than_retention_is_rolled_up_and_the_ledger_kept(billed: Services) -> None:
    from datetime import timedelta

    from studiolo.db.base import utcnow
    from studiolo.domain.billing.models import UsageDaily, UsageRecord

    user = _user(billed, "basic")
    for _ in range(2):
        submit(billed, owner=user, prompt="a", n=2, size="512x512", steps=25)
    drain(billed)
    ledger_before = len(billed.billing.ledger(user, limit=100).items)
    old = utcnow() - timedelta(days=billed.settings.usage_retention_days + 1)
    with billed.db.session() as session:
        for record in session.query(UsageRecord).filter_by(user_id=user):
            record.created_at = old
    assert billed.billing.roll_up_usage() == 2
    with billed.db.session() as session:
        daily = session.get_one(UsageDaily, (user, old.strftime("%Y-%m-%d")))
        assert (daily.jobs, daily.images, daily.credits) == (2, 4, 4)
    assert len(billed.billing.ledger(user, limit=100).items) == ledger_before


def test_switching_plans_within_one_paid_period_grants_each_plan_once(billed: Services) -> None:
    """As Stripe switches plans (the portal): the period's start stays, so a user who moves away from a plan and
    back within it does not get its grant twice."""
    from studiolo.db.base import utcnow

    user = _user(billed, "free")
    anchor = utcnow()
    for plan in ("basic", "free", "basic", "pro", "basic"):
        with billed.db.session() as session:
            billed.billing.set_plan(session, user, plan, now=utcnow(), anchor=anchor)
    grants = sorted(e.amount for e in billed.billing.ledger(user, limit=100).items if e.kind == "grant")
    assert grants == [50, 50, 1000, 10000]  # free's first grant, then free, basic and pro once in this period
    assert billed.billing.summary(user).balance == 0  # basic's grant was spent by the moves (expired)
