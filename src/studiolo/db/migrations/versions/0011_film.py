"""film: projects, scenes, character images, YouTube publications, provider tokens

Revision ID: 0011
Revises: 0010
Create Date: 2027-04-01 10:00:00.000000

Issue 16. A film render is a row of ``jobs`` (kind "film"); nothing changes there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from studiolo.db.base import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _user_fk() -> sa.ForeignKey:
    return sa.ForeignKey("users.id", ondelete="CASCADE")


def _project_fk() -> sa.ForeignKey:
    return sa.ForeignKey("film_projects.id", ondelete="CASCADE")


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "film_projects",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36), _user_fk(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("script", sa.Text(), nullable=False),
        sa.Column("style", sa.String(64), nullable=True),
        sa.Column("model_id", sa.String(200), nullable=True),
        sa.Column("aspect", sa.String(8), nullable=False),
        sa.Column("resolution", sa.String(8), nullable=False),
        sa.Column("target_seconds", sa.Integer(), nullable=False),
        sa.Column("voice", sa.String(120), nullable=False),
        sa.Column("speed", sa.Float(), nullable=False),
        sa.Column("music", sa.String(32), nullable=False),
        sa.Column("podcast", sa.Boolean(), nullable=False),
        sa.Column("speaker_voices", sa.JSON(), nullable=False),
        sa.Column("burn_subtitles", sa.Boolean(), nullable=False),
        sa.Column("motion", sa.String(200), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("share_token", sa.String(64), nullable=True),
        sa.Column("collection_id", sa.String(36), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("render_job_id", sa.String(36), nullable=True),
        sa.Column("render_state", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("timeline", sa.JSON(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        _at("created_at"),
        _at("updated_at"),
        _at("rendered_at", True),
        _at("deleted_at", True),
        sa.UniqueConstraint("share_token", name="uq_film_projects_share_token"),
    )
    op.create_index("ix_film_projects_owner", "film_projects", ["owner_id", "deleted_at", "id"], unique=False)
    op.create_table(
        "film_scenes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(36), _project_fk(), nullable=False),
        sa.Column("owner_id", sa.String(36), _user_fk(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("planned_seconds", sa.Float(), nullable=False),
        sa.Column("narration_seconds", sa.Float(), nullable=True),
        sa.Column("image_id", sa.String(36), nullable=True),
        sa.Column("image_job_id", sa.String(36), nullable=True),
        sa.Column("image_hash", sa.String(64), nullable=True),
        _at("created_at"),
        _at("updated_at"),
    )
    op.create_index("ix_film_scenes_project", "film_scenes", ["project_id", "position"], unique=False)
    op.create_table(
        "film_characters",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(36), _project_fk(), nullable=False),
        sa.Column("owner_id", sa.String(36), _user_fk(), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("image_key", sa.String(300), nullable=False),
        _at("created_at"),
        sa.UniqueConstraint("project_id", "name", name="uq_film_characters_project_name"),
    )
    op.create_table(
        "film_publications",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(36), _project_fk(), nullable=False),
        sa.Column("owner_id", sa.String(36), _user_fk(), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("privacy", sa.String(16), nullable=False),
        sa.Column("media_key", sa.String(300), nullable=False),
        sa.Column("session_url", sa.Text(), nullable=True),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("video_id", sa.String(64), nullable=True),
        sa.Column("captions_uploaded", sa.Boolean(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        _at("created_at"),
        _at("updated_at"),
    )
    op.create_index("ix_film_publications_project", "film_publications", ["project_id", "id"], unique=False)
    op.create_table(
        "provider_tokens",
        sa.Column("user_id", sa.String(36), _user_fk(), primary_key=True),
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        _at("expires_at", True),
        _at("updated_at"),
    )


def downgrade() -> None:
    op.drop_table("provider_tokens")
    op.drop_index("ix_film_publications_project", table_name="film_publications")
    op.drop_table("film_publications")
    op.drop_table("film_characters")
    op.drop_index("ix_film_scenes_project", table_name="film_scenes")
    op.drop_table("film_scenes")
    op.drop_index("ix_film_projects_owner", table_name="film_projects")
    op.drop_table("film_projects")
