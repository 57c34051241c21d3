"""Billing ORM: plans, each user's billing account, the append-only credit ledger, per-job usage records (which are
also the credit holds), their daily roll-ups, and Stripe's events and payments.

The balance is derived from the ledger (``credit_transactions``) and cached on ``billing_accounts`` in the same
transaction as the row that changes it, so reading it is one primary-key lookup (docs/billing.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from studiolo.db.base import Base, UTCDateTime, new_id, utcnow

# Ledger row kinds (credit_transactions.kind).
LEDGER_KINDS = ("grant", "purchase", "reserve", "capture", "release", "refund", "adjustment", "expiry")
# A usage record's state: its credits and images are held by a queued or running job, taken by a finished one,
# or given back by a failed or canceled one.
USAGE_STATES = ("held", "captured", "released")


class Plan(Base):
    """A plan of the catalogue. Limits left NULL are unlimited."""

    __tablename__ = "plans"

    slug: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(Text, default="")
    price_cents: Mapped[int] = mapped_column(Integer, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    stripe_price_id: Mapped[str | None] = mapped_column(String(120), nullable=True)
    monthly_images: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_images: Mapped[int | None] = mapped_column(Integer, nullable=True)
    monthly_credits: Mapped[int] = mapped_column(Integer, default=0)
    max_pixels: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_images_per_job: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queue_priority: Mapped[int] = mapped_column(Integer, default=0)
    max_running_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    watermark: Mapped[bool] = mapped_column(Boolean, default=False)
    # allow / blur / block above the NSFW threshold for this plan's subscribers; None: the install's setting (issue 17).
    nsfw_policy: Mapped[str | None] = mapped_column(String(8), nullable=True, default=None)
    # Job kinds and features it unlocks: txt2img, img2img, inpaint, upscale, film.
    features: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Model ids it may use; NULL: every installed model.
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class BillingAccount(Base):
    """One per user, made on first use: the plan, the cached balance and the Stripe links."""

    __tablename__ = "billing_accounts"

    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    plan_slug: Mapped[str] = mapped_column(String(40))
    # Credits that can be spent now; held: reserved by queued and running jobs. Both are sums over the ledger.
    balance: Mapped[int] = mapped_column(Integer, default=0)
    held: Mapped[int] = mapped_column(Integer, default=0)
    # The part of ``balance`` that came from the current period's plan grant: spent first, expires at period end.
    grant_remaining: Mapped[int] = mapped_column(Integer, default=0)
    # Monthly windows (quota, grant) start at this instant plus whole months.
    anchor_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    granted_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    subscription_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    subscription_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    # Stripe's ``event.created`` of the subscription state applied last: an older event never overwrites it.
    subscription_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Bumped by every change: the first write of a billing transaction, which takes the row's lock (service.py).
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CreditTransaction(Base):
    """One append-only ledger row. ``amount`` changes the spendable balance, ``held`` the reserved credits."""

    __tablename__ = "credit_transactions"
    __table_args__ = (Index("ix_credit_transactions_user", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer, default=0)
    held: Mapped[int] = mapped_column(Integer, default=0)
    balance_after: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    payment_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # Never the same key twice: "{job}:{seq}:reserve", "grant:{user}:{plan}:{period}", "purchase:{stripe id}"...
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    actor_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageRecord(Base):
    """A job's use: the images and credits it holds while queued or running, then what it took. Quotas count these
    rows (no counters to reset); a retry of a failed job is a new record (``seq`` + 1)."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("job_id", "seq", name="uq_usage_records_job_seq"),
        Index("ix_usage_records_user", "user_id", "created_at"),
        Index("ix_usage_records_state", "state", "job_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer, default=1)
    kind: Mapped[str] = mapped_column(String(16))
    images: Mapped[int] = mapped_column(Integer)
    images_used: Mapped[int] = mapped_column(Integer, default=0)
    credits: Mapped[int] = mapped_column(Integer, default=0)
    credits_captured: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(10), default="held")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UsageDaily(Base):
    """Usage records older than STUDIOLO_USAGE_RETENTION_DAYS, rolled up per user and UTC day."""

    __tablename__ = "usage_daily"

    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    jobs: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    credits: Mapped[int] = mapped_column(Integer, default=0)


class StripeEvent(Base):
    """A Stripe webhook event applied (its id is the primary key: a redelivery is a no-op)."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # event.created
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Payment(Base):
    """A payment history row: a subscription invoice or a credit pack, with its status and receipt."""

    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_user", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # "subscription" | "credits"
    # The Stripe object it records (invoice or checkout session id): one row per object.
    stripe_object_id: Mapped[str] = mapped_column(String(255), unique=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    status: Mapped[str] = mapped_column(String(20))  # paid | failed | refunded | partially_refunded
    description: Mapped[str] = mapped_column(Text, default="")
    receipt_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    credits: Mapped[int] = mapped_column(Integer, default=0)
    plan_slug: Mapped[str | None] = mapped_column(String(40), nullable=True)
    refunded_cents: Mapped[int] = mapped_column(Integer, default=0)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


__all__ = [
    "LEDGER_KINDS",
    "USAGE_STATES",
    "BillingAccount",
    "CreditTransaction",
    "Payment",
    "Plan",
    "StripeEvent",
    "UsageDaily",
    "UsageRecord",
]
