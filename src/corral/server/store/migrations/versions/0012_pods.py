"""pods: dev pods and their events, SSH keys, the workspaces' host keys, volumes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _workspace() -> sa.Column[str]:
    return sa.Column(
        "workspace_id",
        sa.String(36),
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "pods",
        sa.Column("id", sa.String(36), primary_key=True),
        _workspace(),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("desired", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("stopped_at", sa.Float(), nullable=True),
        sa.Column("last_activity_at", sa.Float(), nullable=True),
        sa.Column("idle_warned_at", sa.Float(), nullable=True),
        sa.Column("jupyter_token", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_pods_workspace_name"),
    )
    op.create_table(
        "pod_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "pod_id", sa.String(36), sa.ForeignKey("pods.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("who", sa.String(100), nullable=True),
        sa.Column("origin", sa.String(255), nullable=True),
        sa.Column("session_id", sa.String(36), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("bytes", sa.Integer(), nullable=True),
    )
    op.create_index("ix_pod_events_pod_at", "pod_events", ["pod_id", "at"])
    op.create_table(
        "ssh_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        _workspace(),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(100), nullable=False),
        sa.Column("added_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_ssh_keys_name"),
    )
    op.create_table(
        "ssh_host_keys",
        sa.Column(
            "workspace_id",
            sa.String(36),
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(36), primary_key=True),
        _workspace(),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_volumes_name"),
    )
    # A plain ADD COLUMN, as in 0004: a batch "recreate" of jobs on SQLite would drop the
    # old table, and with foreign_keys=ON that cascades to every replica.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE jobs ADD COLUMN pod_id VARCHAR(36) REFERENCES pods (id) ON DELETE SET NULL"
        )
    else:
        op.add_column("jobs", sa.Column("pod_id", sa.String(36), nullable=True))
        op.create_foreign_key(
            "fk_jobs_pod_id", "jobs", "pods", ["pod_id"], ["id"], ondelete="SET NULL"
        )
    op.create_index("ix_jobs_pod_id", "jobs", ["pod_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_pod_id", table_name="jobs")
    if op.get_bind().dialect.name != "sqlite":  # SQLite's inline key has no name
        op.drop_constraint("fk_jobs_pod_id", "jobs", type_="foreignkey")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pod_id")
    op.drop_table("volumes")
    op.drop_table("ssh_host_keys")
    op.drop_table("ssh_keys")
    op.drop_index("ix_pod_events_pod_at", table_name="pod_events")
    op.drop_table("pod_events")
    op.drop_table("pods")
