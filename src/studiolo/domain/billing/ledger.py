"""The credit ledger and the billing account it is cached on: the only code that writes either.

Every change is one append-only ``credit_transactions`` row plus the same change to the cached ``balance``/``held``
of ``billing_accounts``, in the caller's transaction, after the account row is locked (``lock_account``). Each row
has a unique idempotency key, so an operation repeated (a redelivered webhook, a retried settlement) fails to insert
and changes nothing (tests/integration/test_billing_ledger.py).
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from studiolo.db.base import new_id
from studiolo.domain.billing.models import BillingAccount, CreditTransaction, Plan

ACCOUNTS = cast(Table, BillingAccount.__table__)
LEDGER = cast(Table, CreditTransaction.__table__)

# The first write of every billing transaction: it takes the account row's lock (PostgreSQL) and this process's
# SQLite write slot (db/session.py) before anything is read, so two submits of one user are decided one after the
# other, never both from the same balance (tests/integration/test_billing_concurrency.py). It hands the locked row
# back as the account (RETURNING): one round trip instead of an UPDATE and a SELECT on every submit
# (bench/billing.py); ``populate_existing``: an account already in the session is refreshed from it.
_TOUCH = (
    update(BillingAccount)
    .values(version=BillingAccount.version + 1)
    .returning(BillingAccount)
    .where(BillingAccount.user_id == bindparam("account_user_id"))
    .execution_options(populate_existing=True, synchronize_session=False)
)


_APPEND = insert(LEDGER)  # built once: a statement built per call is keyed anew each time (bench/billing.py)


def add_months(start: datetime, months: int) -> datetime:
    """``start`` plus whole months, the day clamped to the month's length (Jan 31 + 1 month = Feb 28/29), as
    Stripe bills."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def month_window(anchor: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The monthly window on ``anchor`` that holds ``now``: (start, end)."""
    months = (now.year - anchor.year) * 12 + now.month - anchor.month
    start = add_months(anchor, months)
    if start > now:
        months -= 1
        start = add_months(anchor, months)
    elif add_months(anchor, months + 1) <= now:
        months += 1
        start = add_months(anchor, months)
    return start, add_months(anchor, months + 1)


def day_window(now: datetime) -> tuple[datetime, datetime]:
    """The UTC day that holds ``now``."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


@dataclass(frozen=True)
class Entry:
    """One ledger row to append: ``amount`` to the spendable balance, ``held`` to the reserved credits."""

    kind: str
    key: str
    amount: int = 0
    held: int = 0
    job_id: str | None = None
    payment_id: str | None = None
    reason: str = ""
    actor_id: str | None = None


def _insert_missing_account(session: Session, user_id: str, plan_slug: str, now: datetime) -> None:
    values = {
        "user_id": user_id,
        "plan_slug": plan_slug,
        "balance": 0,
        "held": 0,
        "grant_remaining": 0,
        "anchor_at": now,
        "granted_period_start": None,
        "cancel_at_period_end": False,
        "version": 0,
        "updated_at": now,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(ACCOUNTS).values(values).on_conflict_do_nothing(index_elements=["user_id"]))


def lock_account(session: Session, user_id: str, default_plan: str, now: datetime) -> BillingAccount:
    """The user's billing account, made on first use, locked for the rest of the transaction and fresh."""
    params = {"account_user_id": user_id}
    account = session.scalars(_TOUCH, params).one_or_none()
    if account is None:
        _insert_missing_account(session, user_id, default_plan, now)
        account = session.scalars(_TOUCH, params).one()  # inserted above; the user row exists (a foreign key)
    return account


def append(session: Session, account: BillingAccount, entries: list[Entry], now: datetime) -> list[str]:
    """Apply ``entries`` to the locked ``account`` and append them to the ledger; returns their row ids.

    Never below zero: the callers check first (reserve) or clamp (expiry, refunds, adjustments), and an entry that
    would make either figure negative is a bug, refused here rather than written."""
    for e in entries:
        account.balance += e.amount
        account.held += e.held
        if account.balance < 0 or account.held < 0:
            raise AssertionError(f"ledger entry {e.key} would make the balance negative")
    ids = insert_entries(session, account.user_id, account.balance - sum(e.amount for e in entries), entries, now)
    if ids:
        session.flush()
    return ids


def insert_entries(session: Session, user_id: str, balance: int, entries: Sequence[Entry], now: datetime) -> list[str]:
    """Append ``entries`` to the ledger, the first applied to a spendable ``balance`` (each row records the balance
    after it); the caller has changed the cached account by the same amounts, in this transaction."""
    rows: list[dict[str, Any]] = []
    for e in entries:
        balance += e.amount
        rows.append(
            {
                "id": new_id(),
                "user_id": user_id,
                "kind": e.kind,
                "amount": e.amount,
                "held": e.held,
                "balance_after": balance,
                "job_id": e.job_id,
                "payment_id": e.payment_id,
                "idempotency_key": e.key,
                "reason": e.reason,
                "actor_id": e.actor_id,
                "created_at": now,
            }
        )
    if rows:
        session.execute(_APPEND, rows)
    return [str(r["id"]) for r in rows]


def has_entry(session: Session, key: str) -> bool:
    return session.scalar(select(LEDGER.c.id).where(LEDGER.c.idempotency_key == key)) is not None


def roll_period(session: Session, account: BillingAccount, plan: Plan, now: datetime) -> None:
    """Start the account's current monthly period if it has not been: the last period's unspent plan credits expire
    and this period's grant is added (each once: their keys name the period). Lazy, at the account's next use: no
    scheduled job has to run at midnight."""
    start, _ = month_window(account.anchor_at, now)
    if account.granted_period_start is not None and account.granted_period_start >= start:
        return
    expire_grant(session, account, now, "Unspent plan credits of the last period expired.")
    key = f"grant:{account.user_id}:{plan.slug}:{start.isoformat()}"
    # Once per plan and period: a user moved off a plan and back within one period does not get its grant twice.
    if plan.monthly_credits > 0 and not has_entry(session, key):
        reason = f"{plan.name} plan: credits for the period from {start:%Y-%m-%d}."
        append(session, account, [Entry("grant", key, amount=plan.monthly_credits, reason=reason)], now)
        account.grant_remaining = plan.monthly_credits
    account.granted_period_start = start


def expire_grant(session: Session, account: BillingAccount, now: datetime, reason: str) -> None:
    """The unspent part of the current period's plan grant expires (at a period's end, or when the plan changes).
    Credits held by queued jobs are not taken: they come back as ordinary credits if those jobs fail."""
    expiring = min(account.grant_remaining, account.balance)
    if expiring > 0 and account.granted_period_start is not None:
        key = f"expiry:{account.user_id}:{account.plan_slug}:{account.granted_period_start.isoformat()}"
        if has_entry(session, key):  # a second expiry in one period (the plan changed back and forth)
            key = f"{key}:{now.isoformat()}"
        append(session, account, [Entry("expiry", key, amount=-expiring, reason=reason)], now)
    account.grant_remaining = 0
