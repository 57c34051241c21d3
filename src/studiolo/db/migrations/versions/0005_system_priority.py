"""jobs: a queue-wide system_priority (administrators only); priority orders only its owner's jobs

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10 10:00:00.000000

Until now ``priority`` came from every submitter and was sorted before the users' turns, so anyone could jump the
queue. Every value stored so far was chosen by the job's owner, so it stays where it is and keeps its new meaning
(the order among the owner's own jobs); ``system_priority`` starts at 0 for all.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain operations: a batch on SQLite would rebuild the table and cannot reflect the DESC expression index.
    op.add_column("jobs", sa.Column("system_priority", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.drop_index("ix_jobs_owner_queue", table_name="jobs")
    op.create_index("ix_jobs_claim", "jobs", ["status", "system_priority", "id", "owner_id"], unique=False)
    op.create_index(
        "ix_jobs_owner_queue",
        "jobs",
        ["status", "owner_id", sa.text("system_priority DESC"), sa.text("priority DESC"), "id"],
        unique=False,
    )


def downgrade() -> None:
    # Before this revision priority was the queue-wide one: an administrator's system priority becomes it again.
    op.execute("UPDATE jobs SET priority = system_priority WHERE system_priority <> 0")
    op.drop_index("ix_jobs_owner_queue", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("system_priority")
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "id"], unique=False)
    op.create_index("ix_jobs_owner_queue", "jobs", ["status", "owner_id", sa.text("priority DESC"), "id"], unique=False)
