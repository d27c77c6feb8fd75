"""recovery: attempts, training progress, recovery state per job

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 05:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempts",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("end_cause", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("start_step", sa.Integer(), nullable=False),
        sa.Column("first_step_at", sa.Float(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("checkpoint_step", sa.Integer(), nullable=True),
        sa.Column("checkpoint_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "attempt"),
    )
    op.add_column("jobs", sa.Column("checkpoint_dir", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("recovery", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("jobs", sa.Column("recheck_at", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("next_replicas", sa.Integer(), nullable=True))
    op.add_column("replicas", sa.Column("step", sa.Integer(), nullable=True))
    op.add_column("replicas", sa.Column("checkpoint_step", sa.Integer(), nullable=True))
    op.add_column("replicas", sa.Column("progress_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("progress_at")
        batch.drop_column("checkpoint_step")
        batch.drop_column("step")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("next_replicas")
        batch.drop_column("recheck_at")
        batch.drop_column("recovery")
        batch.drop_column("checkpoint_dir")
    op.drop_table("attempts")
