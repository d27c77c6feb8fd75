"""Load the placement snapshot from the store, and apply a placement plan to it."""

from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.core.placement import (
    Demand,
    GangPlacement,
    GpuSlot,
    NodeState,
    PendingJob,
    PlacementPlan,
    Snapshot,
)
from corral.server.services.effects import Effects
from corral.server.services.identity import new_id
from corral.server.store.tables import Job, Node, Replica
from corral.spec.job import JobSpec


def load_snapshot(session: Session) -> tuple[Snapshot, dict[str, int]]:
    """The snapshot, and each pending job's version (re-checked when the plan is applied)."""
    nodes = session.scalars(
        select(Node).where(Node.condition == "ready", Node.connected.is_(True))
    ).all()
    held: dict[str, list[Replica]] = {n.id: [] for n in nodes}
    if nodes:
        for replica in session.scalars(
            select(Replica).where(
                Replica.state.in_(ACTIVE_REPLICA_STATES), Replica.node_id.in_(held)
            )
        ):
            held[replica.node_id].append(replica)
    ports: dict[str, set[int]] = {}
    for node_id, port in session.execute(
        select(Replica.node_id, Job.master_port)
        .join(Job, Replica.job_id == Job.id)
        .where(
            Replica.rank == 0,
            Replica.state.in_(ACTIVE_REPLICA_STATES),
            Replica.attempt == Job.attempt,
        )
    ):
        if port is not None:
            ports.setdefault(node_id, set()).add(port)
    node_states = tuple(_node_state(n, held[n.id], ports.get(n.id, set())) for n in nodes)
    jobs = session.scalars(select(Job).where(Job.state == "pending")).all()
    pending = tuple(_pending(job) for job in jobs)
    return Snapshot(node_states, pending), {job.id: job.version for job in jobs}


def _node_state(node: Node, replicas: list[Replica], ports: set[int]) -> NodeState:
    return NodeState(
        id=node.id,
        name=node.name,
        gpus=tuple(
            GpuSlot(g["index"], g["model"], g["memory_mb"], g.get("healthy", True))
            for g in node.gpus
        ),
        cpus=node.cpus,
        memory_mb=node.memory_mb,
        disk_mb=node.disk_mb,
        used_gpus=frozenset(i for r in replicas for i in r.gpus),
        used_cpus=sum(r.cpus for r in replicas),
        used_memory_mb=sum(r.memory_mb for r in replicas),
        used_disk_mb=sum(r.disk_mb for r in replicas),
        used_ports=frozenset(ports),
    )


def _pending(job: Job) -> PendingJob:
    spec = JobSpec.model_validate(job.spec)
    res = spec.resources
    return PendingJob(
        id=job.id,
        replicas=spec.replicas,
        demand=Demand(
            gpus=res.gpus.count,
            gpu_type=res.gpus.type,
            gpu_min_memory_mb=res.gpus.min_memory,
            cpus=res.cpus,
            memory_mb=res.memory,
            disk_mb=res.disk,
        ),
        priority=job.priority,
        submitted_at=job.submitted_at,
    )


def apply_plan(
    session: Session, plan: PlacementPlan, versions: dict[str, int], now: float
) -> Effects:
    """Store the plan. A job changed since the snapshot (cancelled, say) is skipped."""
    effects = Effects()
    for gang in plan.placements:
        if _claim(session, gang, versions[gang.job_id], now):
            effects.sync_nodes |= {r.node_id for r in gang.replicas}
    for job_id, reason in plan.pending_reasons.items():
        session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.version == versions[job_id],
                Job.state == "pending",
                or_(Job.reason.is_(None), Job.reason != reason),
            )
            .values(reason=reason, version=Job.version + 1)
        )
    return effects


def _claim(session: Session, gang: GangPlacement, version: int, now: float) -> bool:
    job = session.get(Job, gang.job_id)
    if job is None or job.version != version or job.state != "pending":
        return False
    spec = JobSpec.model_validate(job.spec)
    attempt = job.attempt + 1
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.version == version, Job.state == "pending")
        .values(
            state="starting",
            attempt=attempt,
            master_port=gang.master_port,
            reason=None,
            version=Job.version + 1,
        )
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    res = spec.resources
    for placed in gang.replicas:
        session.add(
            Replica(
                id=new_id(),
                job_id=job.id,
                attempt=attempt,
                rank=placed.rank,
                node_id=placed.node_id,
                gpus=list(placed.gpus),
                cpus=res.cpus,
                memory_mb=res.memory,
                disk_mb=res.disk,
                state="assigned",
                desired="run",
                created_at=now,
                received_bytes=0,
            )
        )
    return True
