"""What describing a photo costs when billing is on (STUDIOLO_DESCRIBE_CREDITS > 0): the credits are checked before
the describer is asked (no free provider call without them) and taken, once, in the transaction that stores the
description (none for a refusal or a failure). Written with the billing ledger's own primitives: the account row is
locked, the period rolled (its plan grant), then one ledger entry keyed by the description (tests/integration/
test_describe_api.py test_describing_costs_credits_when_billing_is_on)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.domain.accounts.models import User
from studiolo.domain.billing.ledger import Entry, append, lock_account, roll_period
from studiolo.domain.billing.models import BillingAccount
from studiolo.domain.billing.service import BillingService
from studiolo.errors import PaymentRequired

KIND = "capture"  # a ledger kind that takes spendable credits for work done (billing/models.py LEDGER_KINDS)


class DescribeCharge:
    def __init__(self, billing: BillingService | None, credits: int) -> None:
        self.billing = billing
        self.credits = credits

    @property
    def active(self) -> bool:
        return self.credits > 0 and self.billing is not None and self.billing.enabled

    def _locked(self, session: Session, owner_id: str, billing: BillingService) -> BillingAccount:
        """The owner's account, locked and in its current period; 402 when it cannot pay."""
        now = utcnow()
        account = lock_account(session, owner_id, billing.settings.billing_default_plan, now)
        roll_period(session, account, billing.gate.load_plan(session, account.plan_slug), now)
        if account.balance < self.credits:
            raise PaymentRequired(
                f"Describing a photo costs {self.credits} credit{'s' * (self.credits != 1)} and you have "
                f"{account.balance}.",
                code="insufficient_credits",
                details={
                    "needed": self.credits,
                    "balance": account.balance,
                    "held": account.held,
                    "upgrade_url": "/billing",
                },
            )
        return account

    def _due(self, session: Session, owner_id: str) -> BillingService | None:
        """The billing service when ``owner_id`` pays for describing; None when off or an administrator (who, as
        for jobs, is never charged or refused: billing/gate.py)."""
        if not self.active or self.billing is None:
            return None
        return None if session.scalar(select(User.role).where(User.id == owner_id)) == "admin" else self.billing

    def check(self, session: Session, owner_id: str) -> None:
        """402 insufficient_credits unless the owner can pay for one description now."""
        billing = self._due(session, owner_id)
        if billing is not None:
            self._locked(session, owner_id, billing)

    def take(self, session: Session, owner_id: str, description_id: str) -> None:
        """Take the credits for ``description_id`` in the caller's transaction (checked again under the lock)."""
        billing = self._due(session, owner_id)
        if billing is None:
            return
        account = self._locked(session, owner_id, billing)
        entry = Entry(KIND, f"describe:{description_id}", amount=-self.credits, reason="Described a photo.")
        append(session, account, [entry], utcnow())
        # Plan credits are spent first (as a job's capture does): they expire at the period's end.
        account.grant_remaining = max(0, account.grant_remaining - self.credits)
