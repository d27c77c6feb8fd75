"""Upgrading a database that holds data keeps the data (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from corral.server.store.db import Store
from corral.server.store.migrate import HEAD_REVISION, alembic_config, current_revision, upgrade
from corral.server.store.tables import Workspace


def test_every_upgrade_keeps_jobs_and_replicas(database_url: str) -> None:
    store = Store(database_url)
    try:
        config = alembic_config(store.url)
        assert isinstance(config, Config)
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
        with store.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO workspaces (id, name, created_at) VALUES ('w', 'default', 1);")
            )
            conn.execute(
                text(
                    "INSERT INTO nodes (id, name, token_hash, condition, hostname, cpus, "
                    "memory_mb, disk_mb, gpus, gpu_backend, labels, agent_version, connected, "
                    "registered_at, version) VALUES ('n', 'n', 'h', 'ready', 'h', 1, 1, 1, "
                    "'[]', 'none', '{}', '0', false, 1, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO jobs (id, workspace_id, name, spec, state, priority, attempt, "
                    "restarts, submitted_at, version) VALUES ('j', 'w', 'a', '{}', 'running', "
                    "0, 1, 0, 1, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO replicas (id, job_id, attempt, rank, node_id, gpus, cpus, "
                    "memory_mb, disk_mb, state, desired, created_at, received_bytes, version) "
                    "VALUES ('r', 'j', 1, 0, 'n', '[]', 1, 1, 1, 'running', 'run', 1, 0, 1)"
                )
            )
        upgrade(store.engine)  # the server's own path, 0001 -> head
        assert current_revision(store.engine) == HEAD_REVISION
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM replicas")).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
    finally:
        store.close()


def test_0006_numbers_workspaces_and_makes_token_names_unique_and_secret_free(
    database_url: str,
) -> None:
    store = Store(database_url)
    try:
        config = alembic_config(store.url)
        assert isinstance(config, Config)
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0005")
        with store.engine.begin() as conn:
            # Inserted out of creation order: uid_index follows created_at, not insertion.
            for ws_id, name, created in (
                ("w3", "late", 30),
                ("w1", "default", 10),
                ("w2", "b", 20),
            ):
                conn.execute(
                    text("INSERT INTO workspaces (id, name, created_at) VALUES (:i, :n, :c)"),
                    {"i": ws_id, "n": name, "c": created},
                )
            tokens = [
                ("t1", "local-admin", None, "admin", 1),
                ("t2", "ci", "w1", "member", 2),
                ("t3", "ci", "w1", "viewer", 3),  # a duplicate: allowed before 0006
                ("t4", "ci", "w2", "member", 4),  # same name, other workspace: kept
                ("t5", "member-Xy_9-Q", "w2", "member", 5),  # the secret's last 6: renamed
            ]
            for tok_id, name, ws, role, created in tokens:
                conn.execute(
                    text(
                        "INSERT INTO tokens (id, name, token_hash, role, workspace_id, "
                        "created_at) VALUES (:i, :n, :h, :r, :w, :c)"
                    ),
                    {"i": tok_id, "n": name, "h": "h" + tok_id, "r": role, "w": ws, "c": created},
                )
            for join_id, created in (("j2", 2), ("j1", 1)):
                conn.execute(
                    text(
                        "INSERT INTO join_tokens (id, token_hash, created_at) VALUES (:i, :h, :c)"
                    ),
                    {"i": join_id, "h": "h" + join_id, "c": created},
                )
        upgrade(store.engine)
        assert current_revision(store.engine) == HEAD_REVISION
        with store.engine.connect() as conn:
            uid: dict[str, int] = dict(
                conn.execute(text("SELECT name, uid_index FROM workspaces")).all()
            )
            names: dict[str, str] = dict(conn.execute(text("SELECT id, name FROM tokens")).all())
            joins = conn.execute(
                text(
                    "SELECT id, name, uses, expires_at, max_uses, revoked_at FROM join_tokens "
                    "ORDER BY id"
                )
            ).all()
        assert uid == {"default": 1, "b": 2, "late": 3}
        assert (names["t1"], names["t2"], names["t3"], names["t4"]) == (
            "local-admin",
            "ci",
            "ci-2",
            "ci",
        )
        assert names["t5"].startswith("token-") and "Xy_9-Q" not in names["t5"]
        # Join tokens made before keep working as they did: no expiry, no limit.
        assert [tuple(j) for j in joins] == [
            ("j1", "join-1", 0, None, None, None),
            ("j2", "join-2", 0, None, None, None),
        ]
        # New workspaces take the next index; the indexes and token names stay unique.
        with store.transaction() as session:
            session.add(Workspace(id="w4", name="new", created_at=40))
        with store.read() as session:
            assert session.get(Workspace, "w4").uid_index == 4  # type: ignore[union-attr]
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO workspaces (id, name, created_at, uid_index) "
                    "VALUES ('w5', 'dup', 50, 2)"
                )
            )
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tokens (id, name, token_hash, role, workspace_id, created_at) "
                    "VALUES ('t9', 'local-admin', 'h9', 'admin', NULL, 9)"
                )
            )
    finally:
        store.close()


def test_0007_adds_secrets_unique_per_workspace_and_gone_with_it(database_url: str) -> None:
    store = Store(database_url)
    try:
        config = alembic_config(store.url)
        assert isinstance(config, Config)
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0006")
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO workspaces (id, name, created_at, uid_index) "
                    "VALUES ('w', 'default', 1, 1)"
                )
            )
        upgrade(store.engine)
        assert current_revision(store.engine) == HEAD_REVISION
        insert = text(
            "INSERT INTO secrets (id, workspace_id, name, ciphertext, created_at, updated_at) "
            "VALUES (:id, 'w', 'hf', 'gAAAA', 1, 1)"
        )
        with store.engine.begin() as conn:
            conn.execute(insert, {"id": "s1"})
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(insert, {"id": "s2"})
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM workspaces WHERE id = 'w'"))
            left = conn.execute(text("SELECT count(*) FROM secrets")).scalar()
        assert left == 0
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0006")
        assert current_revision(store.engine) == "0006"
    finally:
        store.close()
