"""Migration 0009: the indexes newest-first listing pages walk, on both databases, and a
first page and a cursor page read from the index instead of sorting every job."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select, text
from sqlalchemy.dialects import sqlite

from corral.server.services.pages import beyond
from corral.server.store.db import Store
from corral.server.store.migrate import alembic_config, upgrade
from corral.server.store.tables import Job

INDEXES = {
    "ix_jobs_workspace_submitted": ["workspace_id", "submitted_at", "id"],
    "ix_jobs_submitted": ["submitted_at", "id"],
}


def _indexes(store: Store) -> dict[str, list[str]]:
    with store.engine.connect() as conn:
        return {i["name"]: list(i["column_names"]) for i in inspect(conn).get_indexes("jobs")}


def test_0009_adds_the_listing_indexes_and_takes_them_back(database_url: str) -> None:
    store = Store(database_url)
    try:
        upgrade(store.engine)
        found = _indexes(store)
        assert {name: found.get(name) for name in INDEXES} == INDEXES
        config = alembic_config(store.url)
        assert isinstance(config, Config)
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0008")
        assert not set(INDEXES) & set(_indexes(store))
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        assert set(INDEXES) <= set(_indexes(store))
    finally:
        store.close()


def test_a_page_walks_the_index_without_sorting(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/plan.db")
    try:
        upgrade(store.engine)
        columns = [Job.submitted_at, Job.id]
        first = select(Job.id).where(Job.workspace_id == "w")
        later = first.where(beyond(columns, (1.0, "x"), True))
        for query in (first, later):
            ordered = query.order_by(Job.submitted_at.desc(), Job.id.desc()).limit(51)
            sql = ordered.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            with store.engine.connect() as conn:
                plan = " ".join(r[-1] for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "ix_jobs_workspace_submitted" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # no sort of every job
    finally:
        store.close()
