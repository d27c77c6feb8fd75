"""token lifecycle: unique token names, join tokens that expire, run out and are revoked;
workspaces.uid_index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from itertools import count

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The name `corral token create` gave when none was asked for: the role and the secret's last
# six characters. A listing must show nothing derived from a secret, so these are renamed.
_SECRET_DERIVED = re.compile(r"^(admin|member|viewer)-[A-Za-z0-9_-]{6}$")


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # Plain ADD COLUMNs, never a batch "recreate": on SQLite that drops the old table, and
    # with foreign_keys=ON dropping workspaces cascades to every job, token and quota.
    # SQLite cannot make a column NOT NULL after the fact, so there the NOT NULL columns
    # come with a default that the backfill then overwrites.
    if sqlite:
        op.execute("ALTER TABLE workspaces ADD COLUMN uid_index INTEGER NOT NULL DEFAULT 0")
    else:
        op.add_column("workspaces", sa.Column("uid_index", sa.Integer(), nullable=True))
    rows = bind.execute(sa.text("SELECT id FROM workspaces ORDER BY created_at, id")).all()
    for index, (ws_id,) in enumerate(rows, start=1):
        bind.execute(
            sa.text("UPDATE workspaces SET uid_index = :i WHERE id = :id"),
            {"i": index, "id": ws_id},
        )
    if not sqlite:
        op.alter_column("workspaces", "uid_index", nullable=False)
    op.create_index("uq_workspaces_uid_index", "workspaces", ["uid_index"], unique=True)

    _unique_token_names(bind)
    op.execute(
        "CREATE UNIQUE INDEX uq_tokens_scope_name ON tokens (COALESCE(workspace_id, ''), name)"
    )

    if sqlite:
        op.execute("ALTER TABLE join_tokens ADD COLUMN name VARCHAR(100) NOT NULL DEFAULT ''")
        op.execute("ALTER TABLE join_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0")
    else:
        op.add_column("join_tokens", sa.Column("name", sa.String(length=100), nullable=True))
        op.add_column(
            "join_tokens",
            sa.Column("uses", sa.Integer(), nullable=False, server_default=sa.text("0")),
        )
    op.add_column("join_tokens", sa.Column("expires_at", sa.Float(), nullable=True))
    op.add_column("join_tokens", sa.Column("max_uses", sa.Integer(), nullable=True))
    op.add_column("join_tokens", sa.Column("revoked_at", sa.Float(), nullable=True))
    # The join tokens made so far never expire and have no use limit: they keep working.
    joins = bind.execute(sa.text("SELECT id FROM join_tokens ORDER BY created_at, id")).all()
    for n, (join_id,) in enumerate(joins, start=1):
        bind.execute(
            sa.text("UPDATE join_tokens SET name = :name WHERE id = :id"),
            {"name": f"join-{n}", "id": join_id},
        )
    if not sqlite:
        op.alter_column("join_tokens", "name", nullable=False)
        op.alter_column("join_tokens", "uses", server_default=None)
    op.create_index("uq_join_tokens_name", "join_tokens", ["name"], unique=True)


def _unique_token_names(bind: sa.Connection) -> None:
    """Rename what would break the new unique index, and the names made of a secret."""
    rows = bind.execute(
        sa.text("SELECT id, workspace_id, name FROM tokens ORDER BY created_at, id")
    ).all()
    taken: set[tuple[str, str]] = {(ws or "", name) for _, ws, name in rows}
    seen: set[tuple[str, str]] = set()
    for token_id, ws, name in rows:
        scope = ws or ""
        new = name
        if _SECRET_DERIVED.match(name):
            new = _free(taken, scope, (f"token-{secrets.token_hex(3)}" for _ in count()))
        elif (scope, name) in seen:
            new = _free(taken, scope, (f"{name[:90]}-{n}" for n in count(2)))
        seen.add((scope, new))
        if new != name:
            bind.execute(
                sa.text("UPDATE tokens SET name = :name WHERE id = :id"),
                {"name": new, "id": token_id},
            )


def _free(taken: set[tuple[str, str]], scope: str, candidates: Iterator[str]) -> str:
    name = next(c for c in candidates if (scope, c) not in taken)
    taken.add((scope, name))
    return name


def downgrade() -> None:
    op.drop_index("uq_join_tokens_name", table_name="join_tokens")
    op.drop_index("uq_tokens_scope_name", table_name="tokens")
    op.drop_index("uq_workspaces_uid_index", table_name="workspaces")
    # DROP COLUMN, not a batch recreate (SQLite >= 3.35 has it): see upgrade().
    for column in ("revoked_at", "max_uses", "expires_at", "uses", "name"):
        op.execute(f"ALTER TABLE join_tokens DROP COLUMN {column}")
    op.execute("ALTER TABLE workspaces DROP COLUMN uid_index")
