"""The scheduler's snapshot kept between rounds is the snapshot loaded afresh, by value,
after every kind of change; and what did not change is handed over as the same object."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from corral.core.scheduler import Scheduler
from corral.server.services import jobs, nodes
from corral.server.services.identity import DEFAULT_WORKSPACE, workspace_by_name
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import Loaded, SnapshotLoader
from corral.server.store.db import Store
from corral.server.store.tables import Job, Node, Replica
from corral.spec import parse_job_spec
from corral.wire import agent as wire
from support.store import register_node


def _submit(store: Store, now: float, **spec: Any) -> None:
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        jobs.submit_job(session, ws, parse_job_spec({"command": "true", **spec}), now)


def _report_all(store: Store, now: float, phase: str) -> None:
    """Every active replica reports `phase` (exited: code 0, or stopped if told to stop)."""
    with store.transaction() as session:
        active = session.scalars(
            select(Replica).where(Replica.state.in_(("assigned", "running")))
        ).all()
        for r in active:
            if phase == "running" and r.state == "running":
                continue
            if phase == "exited" and r.desired == "run":
                continue  # only what the server stopped exits
            report = wire.ReplicaReport(
                replica_id=r.id,
                phase=phase,  # type: ignore[arg-type]
                exit_code=0 if phase == "exited" else None,
            )
            nodes.replica_report(session, r.node_id, report, now)


class Rounds:
    """The controller's way (one loader and one Scheduler kept), checked against a fresh
    loader every round."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loader = SnapshotLoader()
        self.scheduler = Scheduler()
        self.last: Loaded | None = None

    def load(self, now: float) -> Loaded:
        with self.store.read() as session:
            kept = self.loader.load(session, now)
        with self.store.read() as session:
            fresh = SnapshotLoader().load(session, now)
        # The same by value; pending and running in any order (the core orders them).
        assert kept.snapshot.nodes == fresh.snapshot.nodes
        assert _by_id(kept.snapshot.pending) == _by_id(fresh.snapshot.pending)
        assert _by_id(kept.snapshot.running) == _by_id(fresh.snapshot.running)
        assert kept.snapshot.quotas == fresh.snapshot.quotas
        assert dict(kept.jobs) == dict(fresh.jobs)
        assert kept.versions == fresh.versions
        self.last = kept
        return kept

    def schedule(self, now: float) -> None:
        loaded = self.load(now)
        plan = self.scheduler.place(loaded.snapshot, now)
        with self.store.transaction() as session:
            apply_plan(session, plan, loaded, now)


def _by_id(jobs: tuple[Any, ...]) -> list[Any]:
    return sorted(jobs, key=lambda j: j.id)


def _job(store: Store, name: str) -> Job:
    with store.read() as session:
        job = session.scalars(select(Job).where(Job.name == name)).one()
        session.expunge(job)
        return job


def test_a_kept_snapshot_equals_a_fresh_one_through_every_kind_of_change(store: Store) -> None:
    a = register_node(
        store, "a", cpus=16, memory_mb=64000, gpus=2, labels={"zone": "z1", "rack": "r1"}
    )
    b = register_node(
        store, "b", cpus=16, memory_mb=64000, gpus=2, labels={"zone": "z1", "rack": "r1"}
    )
    c = register_node(
        store, "c", cpus=16, memory_mb=64000, gpus=4, labels={"zone": "z1", "rack": "r2"}
    )
    rounds = Rounds(store)

    _submit(store, 3.0, name="low", replicas=2, preemptible=True, resources={"gpus": "H100:2"})
    _submit(store, 3.0, name="one", resources={"gpus": "H100:1"}, priority=10)
    rounds.schedule(4.0)
    assert _job(store, "low").state == "starting"
    assert _job(store, "one").state == "starting"

    _report_all(store, 5.0, "running")
    before = rounds.load(5.0).snapshot
    # Nothing changed since: every node and running job comes back as the same object.
    again = rounds.load(5.5).snapshot
    assert all(x is y for x, y in zip(before.nodes, again.nodes, strict=True))
    assert all(x is y for x, y in zip(before.running, again.running, strict=True))

    # A job that cannot fit yet waits with a reason; a second round leaves it unchanged.
    _submit(store, 6.0, name="big", resources={"gpus": "H100:8"})
    rounds.schedule(6.0)
    reason = _job(store, "big").reason
    assert reason is not None and "8" in reason
    version = _job(store, "big").version
    rounds.schedule(6.5)
    assert _job(store, "big").version == version  # the same reason is not written again

    # A high-priority gang preempts the preemptible one.
    _submit(store, 7.0, name="urgent", replicas=2, priority=100, resources={"gpus": "H100:2"})
    rounds.schedule(7.0)
    assert _job(store, "low").state == "pending"
    rounds.load(7.5)
    _report_all(store, 8.0, "exited")  # the victim's replicas stop
    rounds.schedule(8.0)
    assert _job(store, "urgent").state == "starting"
    _report_all(store, 8.5, "running")
    after = rounds.load(9.0).snapshot
    assert any(n.used_ports for n in after.nodes)  # rank 0 of each gang holds its port

    # A node drops off; another is cordoned; a job is cancelled.
    with store.transaction() as session:
        nodes.disconnect(session, b)
        node = session.get(Node, c)
        assert node is not None
        node.condition = "cordoned"
    rounds.load(10.0)
    with store.transaction() as session:
        jobs.cancel_job(session, session.scalars(select(Job).where(Job.name == "big")).one(), 11.0)
    rounds.load(11.0)
    with store.transaction() as session:
        node = session.get(Node, c)
        assert node is not None
        node.condition = "ready"
    loaded = rounds.load(12.0)
    assert {n.id for n in loaded.snapshot.nodes} == {a, c}
