"""node ports: the TCP ports in use on each node; a replica's infrastructure cause

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("ports", sa.JSON(), nullable=True))
    op.add_column("replicas", sa.Column("infra_cause", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("replicas", "infra_cause")
    op.drop_column("nodes", "ports")
