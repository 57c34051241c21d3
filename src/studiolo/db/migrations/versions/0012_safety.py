"""safety and understanding: photo descriptions, output moderation, blocked outputs, per-plan NSFW policy

Revision ID: 0012
Revises: 0011
Create Date: 2027-05-01 10:00:00.000000

Issue 17. ``descriptions`` keeps what a describer said of a user's photo (and the photo), so the images rendered from
it can show both. ``images.nsfw_score`` / ``review_state``: the output check's score and, for an image held back, its
review ("pending" until an administrator approves or rejects it). ``jobs.blocked_outputs``: images the check refused
to store. ``plans.nsfw_policy``: allow / blur / block for the plan's subscribers (NULL: the install's setting).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from studiolo.db.base import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_FK = "fk_images_description_id_descriptions"


def upgrade() -> None:
    op.create_table(
        "descriptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("photo_key", sa.String(200), nullable=False),
        sa.Column("template", sa.String(16), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("describer", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("style", sa.String(64), nullable=True),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_descriptions_owner_id_id", "descriptions", ["owner_id", "id"])
    # Plain ADD COLUMN, never a batch rebuild of images: on SQLite that would drop the FTS5 triggers (see 0008).
    op.add_column("images", sa.Column("nsfw_score", sa.Float(), nullable=True))
    op.add_column("images", sa.Column("review_state", sa.String(16), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"ALTER TABLE images ADD COLUMN description_id VARCHAR(36) "
            f"CONSTRAINT {_FK} REFERENCES descriptions (id) ON DELETE SET NULL"
        )
    else:
        op.add_column("images", sa.Column("description_id", sa.String(36), nullable=True))
        op.create_foreign_key(_FK, "images", "descriptions", ["description_id"], ["id"], ondelete="SET NULL")
    # The admin review queue walks the pending images oldest first.
    op.create_index("ix_images_review_state", "images", ["review_state", "id"])
    op.create_index("ix_images_description_id", "images", ["description_id"])
    op.add_column("jobs", sa.Column("blocked_outputs", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("plans", sa.Column("nsfw_policy", sa.String(8), nullable=True))


def downgrade() -> None:
    op.drop_column("plans", "nsfw_policy")
    op.drop_column("jobs", "blocked_outputs")
    op.drop_index("ix_images_description_id", table_name="images")
    op.drop_index("ix_images_review_state", table_name="images")
    if op.get_bind().dialect.name == "sqlite":
        for column in ("description_id", "review_state", "nsfw_score"):
            op.execute(f"ALTER TABLE images DROP COLUMN {column}")
    else:
        op.drop_constraint(_FK, "images", type_="foreignkey")
        for column in ("description_id", "review_state", "nsfw_score"):
            op.drop_column("images", column)
    op.drop_index("ix_descriptions_owner_id_id", table_name="descriptions")
    op.drop_table("descriptions")
