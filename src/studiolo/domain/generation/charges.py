"""The port through which the job queue asks what a job may cost and tells when it ended (issue 15).

Implemented by the billing service (domain/billing/service.py); ``None`` where billing is off. Both calls run inside
the caller's transaction, so a job is queued if and only if its charge is held, and ends if and only if its charge is
settled (tests/integration/test_billing_jobs.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy.orm import Session


class ChargeGate(Protocol):
    def reserve(self, session: Session, owner_id: str, rows: Sequence[dict[str, Any]], *, retry: bool = False) -> None:
        """Refuse (a domain error) or hold what these queued job rows (not yet inserted, or ``retry``: existing
        jobs queued again) cost; may raise their ``system_priority`` and set ``max_running``."""

    def settle(self, session: Session, outcomes: Mapping[str, int]) -> None:
        """These jobs ended having made this many images each (0: failed or canceled)."""

    def upkeep(self) -> None:
        """Periodic housekeeping (the workers' Trash thread): settle what ended unsettled, roll up old usage."""
