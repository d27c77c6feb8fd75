"""pools: node pools, the instances they launched, why they grew or shrank; join tokens'
labels; cluster settings (the control plane's id, which scopes its cloud instances)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 17:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("blocked_until", sa.Float(), nullable=True),
        sa.Column("blocked_reason", sa.Text(), nullable=True),
        sa.Column("deleting", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "pool_instances",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("node_name", sa.String(253), nullable=False),
        sa.Column("node_id", sa.String(36), nullable=True),
        sa.Column("provider_id", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("join_token_id", sa.String(36), nullable=True),
        sa.Column("launched_at", sa.Float(), nullable=False),
        sa.Column("joined_at", sa.Float(), nullable=True),
        sa.Column("released_at", sa.Float(), nullable=True),
        sa.Column("price_per_hour", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_pool_instances_pool_state", "pool_instances", ["pool", "state"])
    op.create_index("uq_pool_instances_node", "pool_instances", ["node_name"], unique=True)
    op.create_index("ix_pool_instances_node_id", "pool_instances", ["node_id"])
    op.create_table(
        "pool_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_pool_events_pool_at", "pool_events", ["pool", "at"])
    op.add_column("join_tokens", sa.Column("labels", sa.JSON(), nullable=True))
    op.create_table(
        "cluster_settings",
        sa.Column("key", sa.String(63), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_settings")
    with op.batch_alter_table("join_tokens") as batch:
        batch.drop_column("labels")
    op.drop_index("ix_pool_events_pool_at", table_name="pool_events")
    op.drop_table("pool_events")
    op.drop_index("ix_pool_instances_node_id", table_name="pool_instances")
    op.drop_index("uq_pool_instances_node", table_name="pool_instances")
    op.drop_index("ix_pool_instances_pool_state", table_name="pool_instances")
    op.drop_table("pool_instances")
    op.drop_table("pools")
