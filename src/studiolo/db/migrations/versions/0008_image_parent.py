"""images: parent_id, the image an upscaled (or otherwise derived) image was made from

Revision ID: 0008
Revises: 0005
Create Date: 2027-02-01 10:00:00.000000

Nullable, and set to NULL when the parent is purged: a derived image outlives the image it came from.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_FK = "fk_images_parent_id_images"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with its REFERENCES clause in place; a batch operation would rebuild the table and
        # drop the triggers that keep the FTS5 search index in step (migration 0003).
        op.execute(
            f"ALTER TABLE images ADD COLUMN parent_id VARCHAR(36) "
            f"CONSTRAINT {_FK} REFERENCES images (id) ON DELETE SET NULL"
        )
    else:
        op.add_column("images", sa.Column("parent_id", sa.String(length=36), nullable=True))
        op.create_foreign_key(_FK, "images", "images", ["parent_id"], ["id"], ondelete="SET NULL")
    op.create_index("ix_images_parent_id", "images", ["parent_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_images_parent_id", table_name="images")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite (3.35+) drops a column in place unless it is indexed or part of a constraint declared on the table;
        # a column-level REFERENCES clause does not stop it.
        op.execute("ALTER TABLE images DROP COLUMN parent_id")
    else:
        op.drop_constraint(_FK, "images", type_="foreignkey")
        op.drop_column("images", "parent_id")
