"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 14:40:12.253185
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import studiolo.db.base

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("arch", sa.String(length=32), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("display_name", sa.String(length=120), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=120), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("current_job_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_table(
        "collections",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_collections_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
    )
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.create_index("ix_collections_owner_id_id", ["owner_id", "id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("model_id", sa.String(length=200), nullable=False),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("progress_step", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=120), nullable=True),
        sa.Column("lease_expires_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("run_after", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("input_keys", sa.JSON(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_jobs_owner_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_claim", ["status", "priority", "id"], unique=False)
        batch_op.create_index(
            "ix_jobs_owner_queue", ["status", "owner_id", sa.text("priority DESC"), "id"], unique=False
        )
        batch_op.create_index("ix_jobs_lease", ["status", "lease_expires_at"], unique=False)
        batch_op.create_index("ix_jobs_owner_id", ["owner_id", "id"], unique=False)

    op.create_table(
        "style_templates",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("prompt_template", sa.Text(), nullable=False),
        sa.Column("negative_template", sa.Text(), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_style_templates_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_style_templates")),
        sa.UniqueConstraint("owner_id", "slug", name="uq_style_templates_owner_slug"),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        sa.Column("style", sa.String(length=64), nullable=True),
        sa.Column("model_id", sa.String(length=200), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("guidance", sa.Float(), nullable=False),
        sa.Column("sampler", sa.String(length=32), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("original_key", sa.String(length=200), nullable=False),
        sa.Column("thumbnail_keys", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("starred", sa.Boolean(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("created_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_images_job_id_jobs"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_images_owner_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index("ix_images_job_id", ["job_id"], unique=False)
        batch_op.create_index("ix_images_original_key", ["original_key"], unique=False)
        batch_op.create_index("ix_images_owner_id_id", ["owner_id", "id"], unique=False)
        batch_op.create_index("ix_images_owner_model", ["owner_id", "model_id", "id"], unique=False)
        batch_op.create_index("ix_images_owner_starred", ["owner_id", "starred", "id"], unique=False)
        batch_op.create_index("ix_images_owner_style", ["owner_id", "style", "id"], unique=False)

    op.create_table(
        "collection_items",
        sa.Column("collection_id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("added_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_collection_items_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_collection_items_image_id_images"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("collection_id", "image_id", name=op.f("pk_collection_items")),
    )
    with op.batch_alter_table("collection_items", schema=None) as batch_op:
        batch_op.create_index("ix_collection_items_image_id", ["image_id"], unique=False)

    op.create_table(
        "queue_turns",
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("last_claimed_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_queue_turns_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("owner_id", name=op.f("pk_queue_turns")),
    )
    _create_search_index()
    # The built-in local owner: every row needs an owner before sign-up exists.
    op.bulk_insert(
        sa.table(
            "users",
            sa.column("id", sa.String),
            sa.column("email", sa.String),
            sa.column("display_name", sa.String),
            sa.column("role", sa.String),
            sa.column("created_at", studiolo.db.base.UTCDateTime(timezone=True)),
        ),
        [
            {
                "id": "00000000-0000-7000-8000-000000000001",
                "email": "local@studiolo.invalid",
                "display_name": "Local owner",
                "role": "admin",
                "created_at": studiolo.db.base.utcnow(),
            }
        ],
    )


def _create_search_index() -> None:
    """Full-text search over images.search_text: FTS5 on SQLite, a GIN tsvector index on PostgreSQL."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE images_fts USING fts5("
            "search_text, content='images', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')"
        )
        # External-content FTS must be told about every change; triggers keep it exact.
        op.execute(
            "CREATE TRIGGER images_fts_ai AFTER INSERT ON images BEGIN "
            "INSERT INTO images_fts(rowid, search_text) VALUES (new.rowid, new.search_text); END"
        )
        op.execute(
            "CREATE TRIGGER images_fts_ad AFTER DELETE ON images BEGIN "
            "INSERT INTO images_fts(images_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); END"
        )
        op.execute(
            "CREATE TRIGGER images_fts_au AFTER UPDATE OF search_text ON images BEGIN "
            "INSERT INTO images_fts(images_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); "
            "INSERT INTO images_fts(rowid, search_text) VALUES (new.rowid, new.search_text); END"
        )
    elif bind.dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_images_search ON images USING GIN (to_tsvector('simple', search_text))")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("images_fts_ai", "images_fts_ad", "images_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS images_fts")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_images_search")
    with op.batch_alter_table("collection_items", schema=None) as batch_op:
        batch_op.drop_index("ix_collection_items_image_id")

    op.drop_table("collection_items")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_owner_style")
        batch_op.drop_index("ix_images_owner_starred")
        batch_op.drop_index("ix_images_owner_model")
        batch_op.drop_index("ix_images_owner_id_id")
        batch_op.drop_index("ix_images_original_key")
        batch_op.drop_index("ix_images_job_id")

    op.drop_table("images")
    op.drop_table("style_templates")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_owner_id")
        batch_op.drop_index("ix_jobs_lease")
        batch_op.drop_index("ix_jobs_owner_queue")
        batch_op.drop_index("ix_jobs_claim")

    op.drop_table("jobs")
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.drop_index("ix_collections_owner_id_id")

    op.drop_table("collections")
    op.drop_table("queue_turns")
    op.drop_table("workers")
    op.drop_table("users")
    op.drop_table("models")
