"""What a suspended user is told, in one place: the sign-in form, the API's 403 and the web page all say why (the
reason the administrator gave, kept in the suspension's audit event) and what to do, with the stable code
``account_suspended`` (tests/integration/test_suspension_notice.py)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from studiolo.db.session import Database
from studiolo.domain.accounts.models import AuditEvent
from studiolo.errors import Forbidden

REASON_MAX = 500
WHAT_TO_DO = (
    "Until an administrator re-activates it you cannot sign in, generate or use its API keys; your images are kept. "
    "If you think this is a mistake, ask the administrator of this Studiolo."
)


def reason(session: Session, user_id: str) -> str | None:
    """The reason given with the user's latest suspension, if the administrator gave one."""
    details = session.scalar(
        select(AuditEvent.details)
        .where(AuditEvent.action == "user_suspended", AuditEvent.target_id == user_id)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    text = (details or {}).get("reason")
    return text if isinstance(text, str) and text.strip() else None


def suspended(why: str | None) -> Forbidden:
    """The error every refusal of a suspended account raises."""
    said = f"An administrator suspended this account: “{why}”." if why else "An administrator suspended this account."
    return Forbidden(f"{said} {WHAT_TO_DO}", code="account_suspended", details={"reason": why})


def suspended_user(db: Database, user_id: str) -> Forbidden:
    """``suspended`` for a user, reading the reason in a session of its own."""
    with db.session() as session:
        return suspended(reason(session, user_id))
