"""listing indexes: a workspace's jobs newest first, and all jobs newest first

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 22:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `job ls` pages newest first by (submitted_at, id) from a cursor: with these, a page
    # reads its 50 rows from the index instead of sorting every job ever submitted.
    op.create_index("ix_jobs_workspace_submitted", "jobs", ["workspace_id", "submitted_at", "id"])
    op.create_index("ix_jobs_submitted", "jobs", ["submitted_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_submitted", table_name="jobs")
    op.drop_index("ix_jobs_workspace_submitted", table_name="jobs")
