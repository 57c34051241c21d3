"""adapters: LoRA, embeddings, ControlNets, IP-Adapters and ControlNet preprocessors

Revision ID: 0014
Revises: 0013
Create Date: 2027-07-01 10:00:00.000000

Issue 19. ``adapters``: what is installed beside the models, applied to a model per job: its kind, the base family
its tensors were made for (sd15/sd21/sdxl, NULL when they do not say), where its files are, their layout, size,
SHA-256 (the "Lora hashes" of a PNG's parameters) and what the importer learned of it (``meta``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from studiolo.db.base import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapters",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("family", sa.String(16), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("format", sa.String(32), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_adapters_kind", "adapters", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_adapters_kind", table_name="adapters")
    op.drop_table("adapters")
