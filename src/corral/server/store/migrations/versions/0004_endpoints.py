"""endpoints: inference endpoints, their replica jobs, readiness

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 05:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("desired_replicas", sa.Integer(), nullable=False),
        sa.Column("autoscale", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("deleting", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "name", name="uq_endpoints_workspace_name"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("endpoint_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("endpoint_revision", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("draining_at", sa.Float(), nullable=True))
        batch.create_index("ix_jobs_endpoint_id", ["endpoint_id"])
        batch.create_foreign_key(
            "fk_jobs_endpoint_id", "endpoints", ["endpoint_id"], ["id"], ondelete="CASCADE"
        )
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("ready", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("ready_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("ready_at")
        batch.drop_column("ready")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("fk_jobs_endpoint_id", type_="foreignkey")
        batch.drop_index("ix_jobs_endpoint_id")
        batch.drop_column("draining_at")
        batch.drop_column("endpoint_revision")
        batch.drop_column("endpoint_id")
    op.drop_table("endpoints")
