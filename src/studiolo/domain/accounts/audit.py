"""The audit log: sign-ins, password, role and status changes, API keys, deletions. Written in the same
transaction as the change it records (an audited action never happens without its row, nor the reverse)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from studiolo.db.session import Database
from studiolo.domain.accounts.models import AuditEvent


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for the audit trail and the session list."""

    ip: str = ""
    user_agent: str = ""


def record(
    session: Session,
    action: str,
    *,
    actor_id: str | None,
    origin: Origin,
    target_id: str | None = None,
    subject: str = "",
    **details: Any,
) -> None:
    session.add(
        AuditEvent(
            action=action,
            actor_id=actor_id,
            target_id=target_id,
            ip=origin.ip[:64],
            user_agent=origin.user_agent[:255],
            subject=subject,
            details=details,
        )
    )


def forget_subject(session: Session, subject: str) -> None:
    """Blank ``subject`` in the events that hold it (what a failed sign-in typed: an email address), keeping the
    events themselves: a deleted account's address must not outlive it in the audit log."""
    session.execute(update(AuditEvent).where(AuditEvent.subject == subject).values(subject=""))


def list_events(
    db: Database, *, actor_id: str | None = None, action: str | None = None, before: str | None = None, limit: int = 50
) -> list[AuditEvent]:
    """Newest first, keyset-paginated on the (time-ordered UUIDv7) id."""
    with db.session() as session:
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if actor_id:
            query = query.where(AuditEvent.actor_id == actor_id)
        if action:
            query = query.where(AuditEvent.action == action)
        if before:
            query = query.where(AuditEvent.id < before)
        return list(session.scalars(query))
