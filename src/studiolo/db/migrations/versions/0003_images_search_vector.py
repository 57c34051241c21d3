"""images.search_vector: the tsvector of search_text, stored (PostgreSQL only)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00.000000

A text search walks the owner's newest images first and tests each row's vector (see
``studiolo.domain.gallery.search``). Reading a stored vector costs about a sixth of recomputing
``to_tsvector`` per row, so the vector is a generated column and the GIN index moves onto it.
Adding the column rewrites ``images`` once (about 45 s per million rows on a 2-core machine, with
the table locked). SQLite searches through FTS5 and is left alone.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # 'simple'::regconfig, spelled out: a generated column needs an immutable expression.
    op.execute(
        "ALTER TABLE images ADD COLUMN search_vector tsvector "
        "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, search_text)) STORED"
    )
    op.execute("DROP INDEX IF EXISTS ix_images_search")
    op.execute("CREATE INDEX ix_images_search ON images USING GIN (search_vector)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_images_search")
    op.execute("ALTER TABLE images DROP COLUMN IF EXISTS search_vector")
    op.execute("CREATE INDEX ix_images_search ON images USING GIN (to_tsvector('simple', search_text))")
