"""What must hold of a user's credits whatever happened to their jobs (issue 15): read from the database and checked
against the ledger, for the billing tests (tests/integration/test_billing_concurrency.py,
tests/integration/test_billing_ledger_props.py, tests/e2e/test_billing_crash.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select

from studiolo.domain.billing.models import BillingAccount, CreditTransaction, UsageRecord
from studiolo.services import Services


@dataclass(frozen=True)
class Books:
    """A user's account figures and their ledger, as stored."""

    balance: int
    held: int
    entries: list[CreditTransaction]
    usage: list[UsageRecord]

    def of_kind(self, kind: str) -> list[CreditTransaction]:
        return [e for e in self.entries if e.kind == kind]

    def captures_of(self, job_id: str) -> list[CreditTransaction]:
        return [e for e in self.of_kind("capture") if e.job_id == job_id]

    @property
    def captured(self) -> int:
        """The credits taken for work done (a capture row moves them out of ``held``)."""
        return -sum(e.held for e in self.of_kind("capture"))


def books(services: Services, user_id: str) -> Books:
    with services.db.session() as session:
        account = session.get_one(BillingAccount, user_id)
        entries = list(session.scalars(select(CreditTransaction).where(CreditTransaction.user_id == user_id)).all())
        usage = list(session.scalars(select(UsageRecord).where(UsageRecord.user_id == user_id)).all())
        session.expunge_all()
    return Books(account.balance, account.held, entries, usage)


def assert_consistent(services: Services, user_id: str) -> Books:
    """The account agrees with its ledger and its usage records, and no job was charged twice; returns the books."""
    b = books(services, user_id)
    assert b.balance >= 0 and b.held >= 0, (b.balance, b.held)
    # The cached figures are the sums over the ledger.
    assert b.balance == sum(e.amount for e in b.entries), "balance is not the ledger's sum"
    assert b.held == sum(e.held for e in b.entries), "held is not the ledger's sum"
    # Every credit came in as a grant, purchase or adjustment, and went out only as a capture, expiry or refund.
    came_in = sum(e.amount for e in b.entries if e.kind in ("grant", "purchase", "adjustment"))
    went_out = b.captured - sum(e.amount for e in b.entries if e.kind in ("expiry", "refund"))
    assert b.balance + b.held == came_in - went_out, (b.balance, b.held, came_in, went_out)
    assert b.held == sum(r.credits for r in b.usage if r.state == "held"), "held is not what the held records hold"
    # Each hold's reserve row and its settlement agree with its record.
    for record in b.usage:
        key = f"{record.job_id}:{record.seq}:"
        own = [e for e in b.entries if e.idempotency_key.startswith(key)]
        kinds = Counter(e.kind for e in own)
        assert kinds["reserve"] == (1 if record.credits else 0), (key, kinds)
        if record.state == "held":
            assert kinds["capture"] == kinds["release"] == 0, (key, kinds)
        captured = -sum(e.held for e in own if e.kind == "capture")
        released = sum(e.amount for e in own if e.kind == "release")
        assert captured == record.credits_captured, (key, captured, record.credits_captured)
        if record.state != "held":
            assert captured + released == record.credits, (key, captured, released, record.credits)
    # Never charged twice: one capture at most per job, and at most one of its records is held or captured.
    jobs = Counter(e.job_id for e in b.of_kind("capture"))
    assert all(n == 1 for n in jobs.values()), jobs
    live = Counter(r.job_id for r in b.usage if r.state in ("held", "captured"))
    assert all(n == 1 for n in live.values()), live
    return b
