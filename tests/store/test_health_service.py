"""Health reports in the store (services/health.py), on both databases: an Xid under a
running training job takes the node out and ends the attempt as gpu_xid without charging
the script; a degraded GPU stays schedulable; repeated reports store an Xid once; a reboot
clears a reboot verdict; the same Xid after two reboots needs an operator, whose
set-healthy is checked by the next report; a reconnect keeps the judgement."""

from __future__ import annotations

from sqlalchemy import select

from corral.core.recovery import Cause, RecoveryMemory
from corral.core.scheduler import Scheduler
from corral.core.states import JobState, NodeCondition
from corral.server.services import health, jobs, nodes
from corral.server.services.identity import DEFAULT_WORKSPACE, workspace_by_name
from corral.server.services.scheduling import apply_plan
from corral.server.services.snapshot import SnapshotLoader
from corral.server.store.db import Store
from corral.server.store.tables import Attempt, HealthEvent, Job, Node, Replica
from corral.spec import parse_job_spec
from corral.wire import agent as wire
from corral.wire.health import GpuSignals, HealthReport, XidEvent
from support.store import register_node


def _report(
    name: str,
    at: float,
    *,
    boot: str = "boot-1",
    xids: dict[int, list[XidEvent]] | None = None,
    throttle: dict[int, list[str]] | None = None,
    full: bool = True,
) -> HealthReport:
    xids = xids or {}
    throttle = throttle or {}
    return HealthReport(
        sent_at=at,
        boot_id=boot,
        full=full,
        backend="fake",
        gpus=[
            GpuSignals(
                index=i,
                uuid=f"{name}-{i}",
                throttle=throttle.get(i, []),
                ecc_volatile_uncorrected=0,
                ecc_volatile_corrected=0,
                remapped_rows_pending=False,
                remapped_rows_failed=False,
                nvlink_down=[],
                xids=xids.get(i, []),
            )
            for i in range(4)
        ],
    )


def _xid(code: int, at: float) -> XidEvent:
    return XidEvent(code=code, at=at, source="fake")


def _record(store: Store, node_id: str, report: HealthReport, now: float) -> None:
    with store.transaction() as session:
        health.record_health(session, node_id, report, now)


def _node(store: Store, name: str) -> Node:
    with store.read() as session:
        node = session.scalars(select(Node).where(Node.name == name)).one()
        session.expunge(node)
        return node


def _job(store: Store, name: str) -> Job:
    with store.read() as session:
        job = session.scalars(select(Job).where(Job.name == name)).one()
        session.expunge(job)
        return job


def _events(store: Store, node_id: str, kind: str) -> list[HealthEvent]:
    with store.read() as session:
        rows = list(
            session.scalars(
                select(HealthEvent)
                .where(HealthEvent.node_id == node_id, HealthEvent.kind == kind)
                .order_by(HealthEvent.id)
            )
        )
        session.expunge_all()
        return rows


def _run_training(store: Store, now: float) -> list[Replica]:
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        spec = {"name": "train", "command": "x", "replicas": 2, "resources": {"gpus": "H100:2"}}
        jobs.submit_job(session, ws, parse_job_spec(spec), now)
    with store.read() as session:
        loaded = SnapshotLoader().load(session, now)
    plan = Scheduler().place(loaded.snapshot, now)
    with store.transaction() as session:
        apply_plan(session, plan, loaded, now)
    with store.transaction() as session:
        replicas = list(session.scalars(select(Replica).order_by(Replica.rank)))
        for r in replicas:
            report = wire.ReplicaReport(replica_id=r.id, phase="running")
            nodes.replica_report(session, r.node_id, report, now + 0.5)
        session.expunge_all()
    return replicas


def test_xid_79_under_a_training_replica_moves_the_job_and_takes_the_node_out(
    store: Store,
) -> None:
    ids = {n: register_node(store, n, gpus=4) for n in ("a", "b", "c")}
    names = {i: n for n, i in ids.items()}
    replicas = _run_training(store, 10.0)
    victim = replicas[0]
    bad = names[victim.node_id]
    gpu = victim.gpus[0]
    _record(store, victim.node_id, _report(bad, 12.0), 12.0)
    assert _node(store, bad).condition == NodeCondition.READY
    assert _job(store, "train").state in (JobState.STARTING, JobState.RUNNING)

    _record(store, victim.node_id, _report(bad, 13.0, xids={gpu: [_xid(79, 12.9)]}), 13.0)

    node = _node(store, bad)
    assert node.condition == NodeCondition.UNHEALTHY
    assert node.health is not None and node.health["repair"] == "reboot-node"
    assert f"GPU {gpu}: Xid 79" in node.health["summary"]
    assert [g["healthy"] for g in node.gpus] == [i != gpu for i in range(4)]
    job = _job(store, "train")
    assert job.state == JobState.PENDING, job.reason
    assert job.restarts == 0, "a GPU fault is not the script's: max_restarts untouched"
    memory = RecoveryMemory.from_json(job.recovery)
    assert memory.counts == {Cause.GPU_XID: 1}
    with store.read() as session:
        attempt = session.get(Attempt, (job.id, 1))
        assert attempt is not None and attempt.end_cause == "gpu_xid"
    actions = _events(store, victim.node_id, "action")
    assert actions and "cordoned by corral" in actions[-1].text
    assert actions[-1].workloads == ["default/train"]
    (stored,) = _events(store, victim.node_id, "xid")
    assert stored.code == 79 and stored.gpu_index == gpu and "fell off the bus" in stored.text

    # The same Xid in the next reports (they carry the boot's Xids) is stored once.
    _record(store, victim.node_id, _report(bad, 14.0, xids={gpu: [_xid(79, 12.9)]}), 14.0)
    assert len(_events(store, victim.node_id, "xid")) == 1

    # A reconnect keeps the judgement: still out, the GPU still unhealthy.
    with store.transaction() as session:
        row = session.get(Node, victim.node_id)
        assert row is not None
        inventory = wire.Inventory(
            hostname=bad,
            cpus=4,
            memory_mb=16000,
            disk_mb=100000,
            gpu_backend="fake",
            gpus=[
                wire.Gpu(index=i, uuid=f"{bad}-{i}", model="H100", memory_mb=81920)
                for i in range(4)
            ],
        )
        nodes.connect(session, victim.node_id, wire.Hello(inventory=inventory, address=bad), 15.0)
    node = _node(store, bad)
    assert node.condition == NodeCondition.UNHEALTHY
    assert not node.gpus[gpu]["healthy"]

    # A reboot (a new boot id, no Xid in it) brings it back by itself.
    _record(store, victim.node_id, _report(bad, 20.0, boot="boot-2"), 20.0)
    node = _node(store, bad)
    assert node.condition == NodeCondition.READY
    assert all(g["healthy"] for g in node.gpus)
    assert "back in service" in _events(store, victim.node_id, "action")[-1].text


def test_a_degraded_gpu_stays_schedulable(store: Store) -> None:
    node_id = register_node(store, "a", gpus=4)
    _record(store, node_id, _report("a", 5.0, throttle={1: ["hw_thermal"]}), 5.0)
    node = _node(store, "a")
    assert node.condition == NodeCondition.READY
    assert node.health is not None and node.health["health"] == "degraded"
    assert all(g["healthy"] for g in node.gpus)


def test_two_reboots_escalate_and_set_healthy_is_checked(store: Store) -> None:
    node_id = register_node(store, "a", gpus=4)
    for i, boot in enumerate(("b1", "b2", "b3")):
        at = 10.0 * (i + 1)
        _record(store, node_id, _report("a", at, boot=boot, xids={2: [_xid(31 + 0, at)]}), at)
    node = _node(store, "a")
    assert node.health is not None and node.health["needs_operator"], node.health
    assert node.condition == NodeCondition.UNHEALTHY
    # A fourth boot without the Xid: still out, an operator must look.
    _record(store, node_id, _report("a", 50.0, boot="b4"), 50.0)
    assert _node(store, "a").condition == NodeCondition.UNHEALTHY

    # The operator claims a repair; a report with the fault still there refuses it.
    with store.transaction() as session:
        row = session.get(Node, node_id)
        assert row is not None
        row.repair_claim_at = 60.0
    bad = _report("a", 61.0, boot="b5", throttle={}, xids={2: [_xid(81, 60.5)]})
    _record(store, node_id, bad, 61.0)
    node = _node(store, "a")
    assert node.condition == NodeCondition.UNHEALTHY and node.repair_claim_at is None
    assert "set-healthy refused" in _events(store, node_id, "operator")[-1].text

    # Claimed again; the next full report passes: back, and the history before is closed.
    with store.transaction() as session:
        row = session.get(Node, node_id)
        assert row is not None
        row.repair_claim_at = 70.0
    _record(store, node_id, _report("a", 71.0, boot="b6"), 71.0)
    node = _node(store, "a")
    assert node.condition == NodeCondition.READY, node.health
    assert node.repaired_at == 70.0 and node.repair_claim_at is None
    assert "checks pass" in _events(store, node_id, "operator")[-1].text
