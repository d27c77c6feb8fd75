"""health: nodes' health judgement and reports, cordon reasons, and health events

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _node_columns() -> tuple[sa.Column[object], ...]:
    return (
        sa.Column("cordon_reason", sa.Text(), nullable=True),
        sa.Column("health", sa.JSON(), nullable=True),
        sa.Column("health_signals", sa.JSON(), nullable=True),
        sa.Column("health_at", sa.Float(), nullable=True),
        sa.Column("boot_id", sa.String(64), nullable=True),
        sa.Column("repaired_at", sa.Float(), nullable=True),
        sa.Column("repair_claim_at", sa.Float(), nullable=True),
    )


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for column in _node_columns():
            batch.add_column(column)
    op.create_table(
        "health_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "node_id", sa.String(36), sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=True),
        sa.Column("gpu_uuid", sa.String(128), nullable=True),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("subcode", sa.Integer(), nullable=True),
        sa.Column("boot_id", sa.String(64), nullable=True),
        sa.Column("node_at", sa.Float(), nullable=True),
        sa.Column("health", sa.String(16), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("workloads", sa.JSON(), nullable=False),
    )
    op.create_index("ix_health_events_node_at", "health_events", ["node_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_health_events_node_at", table_name="health_events")
    op.drop_table("health_events")
    with op.batch_alter_table("nodes") as batch:
        for column in reversed(_node_columns()):
            batch.drop_column(column.name)
