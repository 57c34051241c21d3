"""Webhooks ORM (issue 18): receivers, signing secrets, the outbox of events to deliver, and each attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from studiolo.db.base import Base, UTCDateTime, new_id, utcnow

# Outbox states: pending (due at next_attempt_at), succeeded (a 2xx came back), failed (retries spent, the receiver
# answered 410, or its endpoint was disabled; "resend" makes it pending again).
MESSAGE_STATUSES = ("pending", "succeeded", "failed")


class WebhookEndpoint(Base):
    """A receiver of an account's job events; ``api_key_id`` set: only jobs that key submitted."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_owner_id", "owner_id", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=True, default=None
    )
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(200), default="")
    # Event types this receiver wants (None: all of them).
    events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=None)
    # Signing secrets are needed in the clear to sign, so they are kept encrypted with the server key, not hashed.
    secret: Mapped[str] = mapped_column(String(255))
    previous_secret: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebhookSecret(Base):
    """The account's secret that signs per-job webhooks (the ``webhook`` field of a submission)."""

    __tablename__ = "webhook_secrets"

    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(255))
    previous_secret: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class WebhookMessage(Base):
    """One event for one receiver: the outbox row. ``id`` is the ``webhook-id`` header, the same on every retry."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        Index("ix_webhook_messages_due", "status", "next_attempt_at"),
        Index("ix_webhook_messages_owner_id", "owner_id", "id"),
        Index("ix_webhook_messages_endpoint_id", "endpoint_id", "id"),
        Index("ix_webhook_messages_job_id", "job_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=True, default=None
    )
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)
    url: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(String(40))
    # The exact body sent (and signed) on every attempt.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=utcnow)
    # A deliverer that claimed the row; another may take it once this passes (a killed worker loses nothing).
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class WebhookAttempt(Base):
    """One delivery attempt of a message: what the receiver answered (its body cut to 1 KB), or why it failed."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_message_id", "message_id", "attempted_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    message_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_messages.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    error: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


def as_event(event_type: str, data: dict[str, Any], timestamp: str) -> dict[str, Any]:
    """The Standard Webhooks body shape: ``{type, timestamp, data}``."""
    return {"type": event_type, "timestamp": timestamp, "data": data}
