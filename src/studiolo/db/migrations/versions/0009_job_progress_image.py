"""jobs: progress_image, the image being sampled when an engine makes a job's images one after another

Revision ID: 0009
Revises: 0005
Create Date: 2027-02-01 10:00:00.000000

A job's progress is the engine's own (issue 14): ``progress_step`` of ``progress_total`` steps of the current
sampling call, and ``progress_image``, the 1-based image that call makes (0: the engine samples every image in one
call). Until now the demo engine counted the steps of all images together ("Step 10 of 100" for four images of 25).
Rows written before are left at 0, which reads as one call, as they were shown.

The lead re-chains ``down_revision`` after the other migrations of issue 14 at merge.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("progress_image", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("progress_image")
