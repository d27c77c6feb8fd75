"""Upgrading a database that holds data keeps the data (SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from corral.server.store.db import Store
from corral.server.store.migrate import HEAD_REVISION, alembic_config, current_revision, upgrade


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
