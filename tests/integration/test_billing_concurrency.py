"""Fifty submits at once by one user whose credits (or quota) cover exactly ten: exactly ten are queued and the
other forty are refused with a 402, on SQLite and on PostgreSQL (issue 15). The account row's lock (ledger.py
lock_account, the first write of the reservation) decides the submits one after the other, never two from the same
balance; the ledger stays consistent (tests/billing_checks.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.billing.plans import PlanSpec
from studiolo.domain.generation.models import Job
from studiolo.errors import PaymentRequired
from studiolo.services import Services, build_services
from tests.billing_checks import assert_consistent
from tests.helpers import create_user, in_threads, submit

SUBMITS = 50
ROOM = 10


@pytest.fixture
def billed(settings_factory: Callable[..., Any]) -> Iterator[Services]:
    svc = build_services(settings_factory(billing="quotas"), upgrade_db=False)
    yield svc
    svc.close(timeout=10)


def _user_on(services: Services, spec: PlanSpec) -> str:
    services.billing.create_plan(spec, actor_id=LOCAL_USER_ID, origin=Origin())
    user_id = create_user(services, "many@example.com")
    services.billing.assign_plan(user_id, spec.slug, actor_id=LOCAL_USER_ID, origin=Origin())
    return user_id


def _submit_at_once(services: Services, user_id: str) -> tuple[list[BaseException | None], list[str]]:
    """``SUBMITS`` one-credit, one-image submits in as many threads started together; (outcomes, queued job ids)."""
    outcomes = in_threads(SUBMITS, lambda: submit(services, owner=user_id, size="512x512", steps=25))
    with services.db.session() as session:
        queued = list(session.scalars(select(Job.id).where(Job.owner_id == user_id)).all())
    return outcomes, queued


def _refusals(outcomes: list[BaseException | None]) -> Counter[tuple[int, str]]:
    unexpected = [o for o in outcomes if o is not None and not isinstance(o, PaymentRequired)]
    assert not unexpected, unexpected[:3]
    return Counter((o.status_code, o.code) for o in outcomes if isinstance(o, PaymentRequired))


def test_credits_for_ten_accept_exactly_ten_of_fifty(billed: Services) -> None:
    user_id = _user_on(billed, PlanSpec(slug="credits10", name="Credits for ten", monthly_credits=0))
    billed.billing.adjust_credits(user_id, ROOM, reason="exactly ten", actor_id=LOCAL_USER_ID, origin=Origin())

    outcomes, queued = _submit_at_once(billed, user_id)

    assert outcomes.count(None) == ROOM and len(queued) == ROOM
    assert _refusals(outcomes) == {(402, "insufficient_credits"): SUBMITS - ROOM}
    books = assert_consistent(billed, user_id)
    assert (books.balance, books.held) == (0, ROOM)
    assert len(books.of_kind("reserve")) == ROOM
    assert sorted(r.job_id for r in books.usage) == sorted(queued)


def test_a_quota_of_ten_accepts_exactly_ten_of_fifty(billed: Services) -> None:
    spec = PlanSpec(slug="quota10", name="Ten images", monthly_images=ROOM, monthly_credits=1000)
    user_id = _user_on(billed, spec)

    outcomes, queued = _submit_at_once(billed, user_id)

    assert outcomes.count(None) == ROOM and len(queued) == ROOM
    refusals = _refusals(outcomes)
    assert refusals == {(402, "quota_exceeded"): SUBMITS - ROOM}
    assert billed.billing.usage(user_id).month.used == ROOM
    books = assert_consistent(billed, user_id)
    assert (books.balance, books.held) == (1000 - ROOM, ROOM)
    with billed.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == ROOM
