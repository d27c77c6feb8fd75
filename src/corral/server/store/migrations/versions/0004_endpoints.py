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
    # Plain ADD COLUMNs: a batch "recreate" of jobs on SQLite would drop the old table, and
    # with foreign_keys=ON that cascades to every replica. SQLite takes the foreign key
    # inline in ADD COLUMN, which Alembic will not emit; PostgreSQL adds it as a constraint.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE jobs ADD COLUMN endpoint_id VARCHAR(36) "
            "REFERENCES endpoints (id) ON DELETE CASCADE"
        )
    else:
        op.add_column("jobs", sa.Column("endpoint_id", sa.String(length=36), nullable=True))
        op.create_foreign_key(
            "fk_jobs_endpoint_id", "jobs", "endpoints", ["endpoint_id"], ["id"], ondelete="CASCADE"
        )
    op.add_column("jobs", sa.Column("endpoint_revision", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("draining_at", sa.Float(), nullable=True))
    op.create_index("ix_jobs_endpoint_id", "jobs", ["endpoint_id"])
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
