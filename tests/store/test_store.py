"""The store and its use cases on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm.exc import StaleDataError

from corral.core.placement import place
from corral.server.errors import Conflict
from corral.server.services import job_logs, jobs, nodes
from corral.server.services.identity import DEFAULT_WORKSPACE, workspace_by_name
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import SnapshotLoader
from corral.server.store.db import Store
from corral.server.store.migrate import HEAD_REVISION, alembic_config, current_revision
from corral.server.store.tables import Base, Job, Replica
from corral.spec import parse_job_spec
from corral.wire import agent as wire
from support.store import check_liveness, register_node


def test_migrations_build_exactly_the_tables_the_code_uses(store: Store) -> None:
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    if store.engine.dialect.name == "sqlite":
        # SQLite's reflection does not read ON DELETE of a foreign key declared inline in
        # ADD COLUMN (0004, jobs.endpoint_id): the same key shows as removed and re-added.
        def key(d: tuple) -> tuple:  # type: ignore[type-arg]
            return tuple((e.parent.name, e.target_fullname) for e in d[1].elements)

        removed = {key(d) for d in diffs if d[0] == "remove_fk"}
        added = {key(d) for d in diffs if d[0] == "add_fk"}
        diffs = [
            d for d in diffs if d[0] not in ("remove_fk", "add_fk") or key(d) not in removed & added
        ]
    assert diffs == []
    assert current_revision(store.engine) == HEAD_REVISION
    script = ScriptDirectory.from_config(alembic_config(store.url))  # type: ignore[arg-type]
    assert script.get_current_head() == HEAD_REVISION


def test_a_stale_write_is_refused(store: Store) -> None:
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        job = jobs.submit_job(session, ws, parse_job_spec({"name": "a", "command": "true"}), 1.0)
        job_id = job.id
    # Two writers read version 1; the first to commit wins, the second is refused.
    with store.read() as session:
        a = session.get(Job, job_id)
        b = session.get(Job, job_id)
        assert a is not None and b is not None
        session.expunge_all()
    with store.read() as session:
        b = session.get(Job, job_id)
        assert b is not None
        session.expunge(b)
    with store.transaction() as session:
        session.add(a)
        a.state = "cancelled"
    with pytest.raises(StaleDataError), store.transaction() as session:
        session.add(b)
        b.state = "starting"
    with store.read() as session:
        row = session.get(Job, job_id)
        assert row is not None and row.state == "cancelled"


def _schedule(store: Store, now: float) -> None:
    with store.read() as session:
        loaded = SnapshotLoader().load(session, now)
    plan = place(loaded.snapshot, now)
    with store.transaction() as session:
        apply_plan(session, plan, loaded, now)


def _submit(store: Store, spec: dict[str, object]) -> None:
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        jobs.submit_job(session, ws, parse_job_spec(spec), 3.0)


def _job(store: Store, name: str) -> tuple[Job, list[Replica]]:
    with store.read() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        job = jobs.get_job(session, ws, name)
        return job, jobs.current_replicas(session, job)


def test_a_gang_runs_to_success_through_the_store(store: Store) -> None:
    a = register_node(store, "a", gpus=2)
    b = register_node(store, "b", gpus=2)
    _submit(
        store,
        {
            "name": "train",
            "command": "true",
            "replicas": 2,
            "resources": {"gpus": "H100:2", "cpus": 1},
        },
    )
    _schedule(store, 4.0)
    job, replicas = _job(store, "train")
    assert job.state == "starting" and job.attempt == 1
    assert sorted(r.node_id for r in replicas) == sorted([a, b])
    for r in replicas:
        with store.transaction() as session:
            nodes.replica_report(
                session,
                r.node_id,
                wire.ReplicaReport(replica_id=r.id, phase="running", pid=10),
                5.0,
            )
    assert _job(store, "train")[0].state == "running"
    for r in replicas:
        with store.transaction() as session:
            nodes.append_log(
                session,
                r.node_id,
                wire.LogChunk(replica_id=r.id, offset=0, nbytes=6, data="hello\n"),
            )
            # A resend after a reconnect must not duplicate the log.
            nodes.append_log(
                session,
                r.node_id,
                wire.LogChunk(replica_id=r.id, offset=0, nbytes=6, data="hello\n"),
            )
            nodes.replica_report(
                session,
                r.node_id,
                wire.ReplicaReport(replica_id=r.id, phase="exited", exit_code=0, log_bytes=6),
                6.0,
            )
    job, _ = _job(store, "train")
    assert (job.state, job.exit_code) == ("succeeded", 0)
    with store.read() as session:
        page = job_logs.read_logs(session, job, 1, 0)
    assert page.data == "hello\n" and page.complete and page.next_offset == 6


def test_a_second_job_with_the_same_name_is_refused(store: Store) -> None:
    _submit(store, {"name": "dup", "command": "true"})
    with pytest.raises(Conflict) as err:
        _submit(store, {"name": "dup", "command": "true"})
    assert "already exists" in err.value.message


def test_a_lost_node_ends_the_attempt_and_requeues_the_job(store: Store) -> None:
    a = register_node(store, "a")
    _submit(store, {"name": "j", "command": "sleep 100", "resources": {"cpus": 1}})
    _schedule(store, 4.0)
    _, replicas = _job(store, "j")
    assert [r.node_id for r in replicas] == [a]
    with store.transaction() as session:
        check_liveness(session, 30.0, 10.0, 0.0)
    job, replicas = _job(store, "j")
    assert job.state == "pending" and "lost" in (job.reason or "")
    assert replicas[0].state == "lost"
    with store.read() as session:
        view = nodes.node_views(session, 30.0)
    assert view[0].condition == "lost"


def test_no_node_is_lost_for_silence_before_the_server_started(store: Store) -> None:
    register_node(store, "a")
    with store.transaction() as session:
        check_liveness(session, 30.0, 10.0, 25.0)
    with store.read() as session:
        assert nodes.node_views(session, 30.0)[0].condition == "ready"
