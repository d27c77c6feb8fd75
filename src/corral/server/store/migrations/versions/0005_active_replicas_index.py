"""replicas by state: the scheduler reads the active ones every round

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Without it each round scans every replica ever run; with it, only the active ones.
    op.create_index("ix_replicas_state", "replicas", ["state"])


def downgrade() -> None:
    op.drop_index("ix_replicas_state", table_name="replicas")
