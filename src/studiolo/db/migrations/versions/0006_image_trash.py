"""images.trashed_at: deleting an image moves it to the Trash, restorable until it is purged

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-20 10:00:00.000000

A delete used to remove the row and its files at once, so the web page held it back for an Undo window and lost it
when the page was left (issue 14). Now the row stays, marked with the time it was trashed; listings, counts and
search leave it out, and it is purged by its owner or by housekeeping after ``STUDIOLO_TRASH_DAYS``. Every image
stored so far is in the gallery (NULL). Adding a nullable column without a default is instant on both databases.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import studiolo.db.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain operations, as 0005: a batch on SQLite would rebuild the table (and lose the full-text triggers).
    op.add_column("images", sa.Column("trashed_at", studiolo.db.base.UTCDateTime(timezone=True), nullable=True))
    op.create_index("ix_images_owner_trashed", "images", ["owner_id", "trashed_at", "id"], unique=False)
    op.create_index("ix_images_trashed_at", "images", ["trashed_at"], unique=False)


def downgrade() -> None:
    # Trashed images were deleted as far as their owners know: going back to a schema without a Trash would show
    # them in the gallery again. Their rows go; their files are then unreferenced and the orphan sweep removes them.
    op.execute("DELETE FROM images WHERE trashed_at IS NOT NULL")
    op.drop_index("ix_images_trashed_at", table_name="images")
    op.drop_index("ix_images_owner_trashed", table_name="images")
    # SQLite (>= 3.35) drops a column in place; Alembic's batch mode would rebuild the table without its triggers.
    op.execute("ALTER TABLE images DROP COLUMN trashed_at")
