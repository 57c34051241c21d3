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
