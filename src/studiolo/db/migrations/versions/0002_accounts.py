"""accounts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 14:15:08.563658
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import studiolo.db.base

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.String(length=36), nullable=True),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("target_id", sa.String(length=36), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=255), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_action", ["action", "id"], unique=False)
        batch_op.create_index("ix_audit_events_actor", ["actor_id", "id"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_api_keys_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index("ix_api_keys_owner", ["owner_id", "created_at"], unique=False)

    op.create_table(
        "oauth_accounts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_oauth_accounts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_accounts")),
        sa.UniqueConstraint("provider", "subject", name=op.f("uq_oauth_accounts_provider")),
    )
    with op.batch_alter_table("oauth_accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_accounts_user_id"), ["user_id"], unique=False)

    op.create_table(
        "one_time_codes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_one_time_codes_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_one_time_codes")),
    )
    with op.batch_alter_table("one_time_codes", schema=None) as batch_op:
        batch_op.create_index("ix_one_time_codes_user_purpose", ["user_id", "purpose"], unique=False)

    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("family_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_refresh_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_refresh_tokens_family", ["family_id"], unique=False)
        batch_op.create_index("ix_refresh_tokens_user", ["user_id"], unique=False)

    # Plain ADD COLUMN (no batch copy of `users`: recreating the parent table on SQLite would fire the
    # ON DELETE CASCADE of every job and image). Existing rows are active accounts.
    op.add_column("users", sa.Column("password_hash", sa.String(length=255), nullable=True))
    op.add_column("users", sa.Column("status", sa.String(length=16), nullable=False, server_default="active"))
    op.add_column("users", sa.Column("email_verified_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("token_epoch", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("users", sa.Column("last_login_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True))
    op.add_column(
        "users",
        sa.Column(
            "updated_at",
            studiolo.db.base.UTCDateTime(timezone=True),
            nullable=False,
            server_default="1970-01-01 00:00:00.000000",
        ),
    )
    op.create_index(op.f("ix_users_status"), "users", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_users_status"), table_name="users")
    for column in ("updated_at", "last_login_at", "token_epoch", "email_verified_at", "status", "password_hash"):
        op.drop_column("users", column)

    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_refresh_tokens_user")
        batch_op.drop_index("ix_refresh_tokens_family")

    op.drop_table("refresh_tokens")
    with op.batch_alter_table("one_time_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_one_time_codes_user_purpose")

    op.drop_table("one_time_codes")
    with op.batch_alter_table("oauth_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_accounts_user_id"))

    op.drop_table("oauth_accounts")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_api_keys_owner")

    op.drop_table("api_keys")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_actor")
        batch_op.drop_index("ix_audit_events_action")

    op.drop_table("audit_events")
