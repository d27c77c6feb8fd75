"""node runtimes: the container runtimes (docker, podman) each node's agent reported

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 15:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("runtimes", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("nodes", "runtimes")
