"""indexes for what controllers read every round or tick: active replicas, jobs to recheck

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
    # Without them each scheduling round scans every replica ever run, and each liveness
    # tick every job ever submitted; with them, only the active and the due ones.
    op.create_index("ix_replicas_state", "replicas", ["state"])
    op.create_index("ix_jobs_recheck_at", "jobs", ["recheck_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_recheck_at", table_name="jobs")
    op.drop_index("ix_replicas_state", table_name="replicas")
