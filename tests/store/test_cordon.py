"""Recovery's `cordon` applied: a replica that dies on a GPU its agent reports unhealthy ends
the attempt as infrastructure (not the script's fault), its node is cordoned for every job,
the job's reason says so, and the scheduler places nothing new there. On both databases."""

from __future__ import annotations

from sqlalchemy import select

from corral.core.recovery import Cause, RecoveryMemory
from corral.core.scheduler import Scheduler
from corral.core.states import JobState, NodeCondition
from corral.server.services import jobs, nodes
from corral.server.services.identity import DEFAULT_WORKSPACE, workspace_by_name
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import SnapshotLoader
from corral.server.store.db import Store
from corral.server.store.tables import Job, Node, Replica
from corral.spec import parse_job_spec
from corral.wire import agent as wire
from support.store import register_node


def _submit(store: Store, name: str, now: float, **spec: object) -> None:
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        jobs.submit_job(session, ws, parse_job_spec({"name": name, "command": "x", **spec}), now)


def _schedule(store: Store, now: float) -> None:
    with store.read() as session:
        loaded = SnapshotLoader().load(session, now)
    plan = Scheduler().place(loaded.snapshot, now)
    with store.transaction() as session:
        apply_plan(session, plan, loaded, now)


def _job(store: Store, name: str) -> Job:
    with store.read() as session:
        job = session.scalars(select(Job).where(Job.name == name)).one()
        session.expunge(job)
        return job


def _replicas(store: Store, name: str) -> list[Replica]:
    job = _job(store, name)
    with store.read() as session:
        rows = list(
            session.scalars(
                select(Replica)
                .where(Replica.job_id == job.id, Replica.attempt == job.attempt)
                .order_by(Replica.rank)
            )
        )
        session.expunge_all()
        return rows


def _conditions(store: Store) -> dict[str, str]:
    with store.read() as session:
        return {
            name: condition
            for name, condition in session.execute(select(Node.name, Node.condition))
        }


def _inventory(name: str, unhealthy: set[int]) -> wire.Inventory:
    return wire.Inventory(
        hostname=name,
        cpus=4,
        memory_mb=16000,
        disk_mb=100000,
        gpu_backend="fake",
        labels={"host": name},
        gpus=[
            wire.Gpu(
                index=i,
                uuid=f"{name}-{i}",
                model="H100",
                memory_mb=81920,
                healthy=i not in unhealthy,
            )
            for i in range(4)
        ],
    )


def test_a_replica_dead_on_a_bad_gpu_cordons_its_node_for_every_job(store: Store) -> None:
    ids = {n: register_node(store, n, gpus=4, labels={"host": n}) for n in ("a", "b", "c")}
    names = {i: n for n, i in ids.items()}
    _submit(store, "train", 3.0, replicas=2, resources={"gpus": "H100:2"})
    _schedule(store, 4.0)
    first = _replicas(store, "train")
    assert len(first) == 2
    with store.transaction() as session:
        for r in first:
            report = wire.ReplicaReport(replica_id=r.id, phase="running")
            nodes.replica_report(session, r.node_id, report, 5.0)

    # The agent on rank 0's node finds one of its GPUs broken, and rank 0 dies of it.
    victim = first[0]
    bad = names[victim.node_id]
    with store.transaction() as session:
        hello = wire.Hello(inventory=_inventory(bad, {victim.gpus[0]}), address=bad)
        nodes.connect(session, victim.node_id, hello, 6.0)
        report = wire.ReplicaReport(replica_id=victim.id, phase="exited", exit_code=139)
        nodes.replica_report(session, victim.node_id, report, 6.5)

    job = _job(store, "train")
    assert job.state == JobState.PENDING
    assert job.restarts == 0, "not charged to the script's max_restarts"
    assert job.reason is not None
    assert f"cordoned {bad} (suspect hardware)" in job.reason
    assert "reported unhealthy" in job.reason
    memory = RecoveryMemory.from_json(job.recovery)
    assert memory.counts == {Cause.GPU_XID: 1} and bad in memory.excluded
    assert _conditions(store)[bad] == NodeCondition.CORDONED
    others = {n for n in ("a", "b", "c") if n != bad}
    assert {_conditions(store)[n] for n in others} == {NodeCondition.READY}

    # The gang is placed again without it.
    _schedule(store, 7.0)
    assert _job(store, "train").state == JobState.STARTING
    assert bad not in {names[r.node_id] for r in _replicas(store, "train")}
    # Another job that only the cordoned node could take (it has 3 healthy GPUs free)
    # waits: the cordon is for every job, not only the one that failed there.
    _submit(store, "other", 8.0, node_selector={"host": bad}, resources={"gpus": "H100:1"})
    _schedule(store, 9.0)
    other = _job(store, "other")
    assert other.state == JobState.PENDING and other.reason
    _submit(store, "elsewhere", 8.0, node_selector={"host": others.pop()})
    _schedule(store, 9.5)
    assert _job(store, "elsewhere").state == JobState.STARTING, "a ready node still takes work"

    # Its agent reconnecting does not make it ready again: an operator decides that.
    with store.transaction() as session:
        hello = wire.Hello(inventory=_inventory(bad, set()), address=bad)
        nodes.connect(session, ids[bad], hello, 10.0)
    assert _conditions(store)[bad] == NodeCondition.CORDONED
