"""ecosystem: webhooks (endpoints, a durable outbox, attempts), remote models, per-user default model

Revision ID: 0013
Revises: 0012
Create Date: 2027-06-01 10:00:00.000000

Issue 18. ``webhook_endpoints``: an account's (or one API key's) webhook receivers, each with its own signing
secret (and the previous one while a rotation is in grace). ``webhook_secrets``: the account's secret that signs
per-job webhooks (Replicate's ``webhook`` field). ``webhook_messages`` is the outbox: one row per event per
receiver, written in the same transaction that notices the job's new state, delivered and retried from it;
``webhook_attempts`` keeps one row per delivery attempt (the owner's delivery log). ``jobs.webhook``: a per-job
receiver {url, events}; ``jobs.webhook_state``: the last job status whose events were queued (NULL: the job has no
receiver), so a crash between a job's end and its webhook loses nothing; ``jobs.api_key_id``: the key that
submitted the job (per-key endpoints); ``jobs.provider_cost``: what a hosted provider charged, in US dollars.
``models.remote_model`` / ``remote_options``: a hosted provider's model name and options for a remote model row.
``users.default_model``: the model a user chose as theirs (A1111's ``sd_model_checkpoint``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from studiolo.db.base import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("api_key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("events", sa.JSON(), nullable=True),
        sa.Column("secret", sa.String(255), nullable=False),
        sa.Column("previous_secret", sa.String(255), nullable=True),
        sa.Column("previous_secret_expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(64), nullable=True),
        sa.Column("failing_since", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_webhook_endpoints_owner_id", "webhook_endpoints", ["owner_id", "id"])
    op.create_table(
        "webhook_secrets",
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("secret", sa.String(255), nullable=False),
        sa.Column("previous_secret", sa.String(255), nullable=True),
        sa.Column("previous_secret_expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "endpoint_id", sa.String(36), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_webhook_messages_due", "webhook_messages", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_messages_owner_id", "webhook_messages", ["owner_id", "id"])
    op.create_index("ix_webhook_messages_endpoint_id", "webhook_messages", ["endpoint_id", "id"])
    op.create_index("ix_webhook_messages_job_id", "webhook_messages", ["job_id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "message_id", sa.String(40), sa.ForeignKey("webhook_messages.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempted_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(255), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
    )
    op.create_index("ix_webhook_attempts_message_id", "webhook_attempts", ["message_id", "attempted_at"])
    op.add_column("jobs", sa.Column("webhook", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("webhook_state", sa.String(16), nullable=True))
    op.add_column("jobs", sa.Column("api_key_id", sa.String(36), nullable=True))
    op.add_column("jobs", sa.Column("provider_cost", sa.Float(), nullable=True))
    # The webhook sweep reads only the jobs that have receivers and a status their events have not caught up with.
    op.create_index("ix_jobs_webhook_state", "jobs", ["webhook_state"])
    op.add_column("models", sa.Column("remote_model", sa.String(200), nullable=True))
    op.add_column("models", sa.Column("remote_options", sa.JSON(), nullable=True))
    op.add_column("users", sa.Column("default_model", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "default_model")
    op.drop_column("models", "remote_options")
    op.drop_column("models", "remote_model")
    op.drop_index("ix_jobs_webhook_state", table_name="jobs")
    for column in ("provider_cost", "api_key_id", "webhook_state", "webhook"):
        op.drop_column("jobs", column)
    op.drop_index("ix_webhook_attempts_message_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    for index in ("ix_webhook_messages_job_id", "ix_webhook_messages_endpoint_id", "ix_webhook_messages_owner_id"):
        op.drop_index(index, table_name="webhook_messages")
    op.drop_index("ix_webhook_messages_due", table_name="webhook_messages")
    op.drop_table("webhook_messages")
    op.drop_table("webhook_secrets")
    op.drop_index("ix_webhook_endpoints_owner_id", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
