"""billing: plans, billing accounts, the credit ledger, usage records and their daily roll-ups, Stripe events and
payments; jobs.max_running

Revision ID: 0010
Revises: 0009
Create Date: 2027-03-01 10:00:00.000000

Issue 15. The plan catalogue's defaults (seed 003's free, basic and pro) are written by the billing service at start
when the table is empty (domain/billing/plans.py), not here: an operator's plans file replaces them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from studiolo.db.base import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _user_fk() -> sa.ForeignKey:
    return sa.ForeignKey("users.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("slug", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("stripe_price_id", sa.String(120), nullable=True),
        sa.Column("monthly_images", sa.Integer(), nullable=True),
        sa.Column("daily_images", sa.Integer(), nullable=True),
        sa.Column("monthly_credits", sa.Integer(), nullable=False),
        sa.Column("max_pixels", sa.Integer(), nullable=True),
        sa.Column("max_images_per_job", sa.Integer(), nullable=True),
        sa.Column("max_steps", sa.Integer(), nullable=True),
        sa.Column("queue_priority", sa.Integer(), nullable=False),
        sa.Column("max_running_jobs", sa.Integer(), nullable=True),
        sa.Column("watermark", sa.Boolean(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=True),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("retired_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "billing_accounts",
        sa.Column("user_id", sa.String(36), _user_fk(), primary_key=True),
        sa.Column("plan_slug", sa.String(40), nullable=False),
        sa.Column("balance", sa.Integer(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("grant_remaining", sa.Integer(), nullable=False),
        sa.Column("anchor_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("granted_period_start", UTCDateTime(timezone=True), nullable=True),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True, unique=True),
        sa.Column("stripe_subscription_id", sa.String(255), nullable=True),
        sa.Column("subscription_status", sa.String(32), nullable=True),
        sa.Column("subscription_period_end", UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("subscription_event_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_billing_accounts_stripe_subscription_id", "billing_accounts", ["stripe_subscription_id"], unique=False
    )
    op.create_table(
        "credit_transactions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), _user_fk(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("balance_after", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("payment_id", sa.String(36), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.String(36), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_credit_transactions_user", "credit_transactions", ["user_id", "created_at"])
    op.create_index("ix_credit_transactions_job_id", "credit_transactions", ["job_id"])
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), _user_fk(), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("images_used", sa.Integer(), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("credits_captured", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("settled_at", UTCDateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("job_id", "seq", name="uq_usage_records_job_seq"),
    )
    op.create_index("ix_usage_records_user", "usage_records", ["user_id", "created_at"])
    op.create_index("ix_usage_records_state", "usage_records", ["state", "job_id"])
    op.create_table(
        "usage_daily",
        sa.Column("user_id", sa.String(36), _user_fk(), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(80), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), _user_fk(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("stripe_object_id", sa.String(255), nullable=False, unique=True),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("receipt_url", sa.Text(), nullable=True),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("plan_slug", sa.String(40), nullable=True),
        sa.Column("refunded_cents", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_payments_user", "payments", ["user_id", "created_at"])
    # add_column, never batch_alter_table on jobs' neighbours with triggers (see 0008).
    op.add_column("jobs", sa.Column("max_running", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("max_running")
    for table in ("payments", "stripe_events", "usage_daily", "usage_records", "credit_transactions"):
        op.drop_table(table)
    op.drop_index("ix_billing_accounts_stripe_subscription_id", table_name="billing_accounts")
    op.drop_table("billing_accounts")
    op.drop_table("plans")
