"""Load the placement snapshot from the store, and apply a placement plan to it."""

from __future__ import annotations

from collections.abc import Mapping

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
    Preemption,
    ReplicaPlacement,
    RunningJob,
    Snapshot,
)
from corral.core.recovery import Cause
from corral.server.services import recovery
from corral.server.services.effects import Effects
from corral.server.services.identity import new_id
from corral.server.store.tables import Job, Node, Quota, Replica, Workspace
from corral.spec.job import JobSpec

# A job's spec never changes after submission, and validating it is most of what a round's
# snapshot costs at thousands of running jobs: keep each parsed spec, by job id.
_SPECS: dict[str, JobSpec] = {}
_SPECS_MAX = 200_000


def job_spec(job: Job) -> JobSpec:
    spec = _SPECS.get(job.id)
    if spec is None:
        if len(_SPECS) >= _SPECS_MAX:
            _SPECS.clear()
        spec = _SPECS[job.id] = JobSpec.model_validate(job.spec)
    return spec


# Node labels that place a node in the topology tree provider/region/zone/rack/node.
TOPOLOGY_LABELS = ("provider", "region", "zone", "rack")


def node_topology(labels: Mapping[str, str]) -> tuple[str, ...]:
    """The node's topology path from its labels; () when it reports none (a flat fleet)."""
    path = tuple(labels.get(key, "") for key in TOPOLOGY_LABELS)
    return path if any(path) else ()


def load_snapshot(session: Session, now: float = 0.0) -> tuple[Snapshot, dict[str, int]]:
    """The snapshot, and each pending job's version (re-checked when the plan is applied)."""
    nodes = session.scalars(
        select(Node).where(Node.condition == "ready", Node.connected.is_(True))
    ).all()
    held: dict[str, list[Replica]] = {n.id: [] for n in nodes}
    # Every active replica: those on ready nodes hold resources, and every running job's
    # replicas describe it as a possible preemption victim and as quota usage.
    by_job: dict[str, list[Replica]] = {}
    for replica in session.scalars(select(Replica).where(Replica.state.in_(ACTIVE_REPLICA_STATES))):
        if replica.node_id in held:
            held[replica.node_id].append(replica)
        by_job.setdefault(replica.job_id, []).append(replica)
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
    workspaces = {
        ws_id: name for ws_id, name in session.execute(select(Workspace.id, Workspace.name))
    }
    jobs = session.scalars(select(Job).where(Job.state == "pending")).all()
    node_ids = {n.name: n.id for n in nodes}
    pending = tuple(_pending(job, workspaces[job.workspace_id], node_ids, now) for job in jobs)
    running: list[RunningJob] = []
    versions = {job.id: job.version for job in jobs}
    if by_job:
        for job in session.scalars(
            select(Job).where(
                Job.id.in_(by_job), Job.state.in_(("starting", "running")), Job.attempt > 0
            )
        ):
            current = [r for r in by_job[job.id] if r.attempt == job.attempt]
            # A replica already told to stop is on its way out: not a victim to pick again.
            if current and all(r.desired == "run" for r in current):
                running.append(_running(job, workspaces[job.workspace_id], current))
                versions[job.id] = job.version
    quotas: dict[str, dict[str, int]] = {}
    for workspace_id, model, gpus in session.execute(
        select(Quota.workspace_id, Quota.gpu_model, Quota.gpus)
    ):
        quotas.setdefault(workspaces[workspace_id], {})[model] = gpus
    return Snapshot(node_states, pending, tuple(running), quotas), versions


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
        topology=node_topology(node.labels),
        labels=dict(node.labels),
    )


def _demand(spec: JobSpec) -> Demand:
    res = spec.resources
    return Demand(
        gpus=res.gpus.count,
        gpu_type=res.gpus.type,
        gpu_min_memory_mb=res.gpus.min_memory,
        cpus=res.cpus,
        memory_mb=res.memory,
        disk_mb=res.disk,
    )


def _pending(job: Job, workspace: str, node_ids: Mapping[str, str], now: float) -> PendingJob:
    spec = job_spec(job)
    return PendingJob(
        id=job.id,
        replicas=job.next_replicas or spec.replicas,
        demand=_demand(spec),
        priority=job.priority,
        submitted_at=job.submitted_at,
        workspace=workspace,
        preemptible=spec.preemptible,
        topology=spec.topology,
        node_selector=dict(spec.node_selector),
        max_runtime_s=spec.max_runtime,
        excluded_nodes=recovery.excluded_node_ids(job, node_ids, now),
    )


def _running(job: Job, workspace: str, replicas: list[Replica]) -> RunningJob:
    spec = job_spec(job)
    started = job.started_at
    if started is None:
        started = min(r.created_at for r in replicas)
    return RunningJob(
        id=job.id,
        workspace=workspace,
        priority=job.priority,
        preemptible=spec.preemptible,
        demand=_demand(spec),
        replicas=tuple(
            ReplicaPlacement(r.rank, r.node_id, tuple(r.gpus))
            for r in sorted(replicas, key=lambda r: r.rank)
        ),
        started_at=started,
        expected_end=None if spec.max_runtime is None else started + spec.max_runtime,
    )


def apply_plan(
    session: Session, plan: PlacementPlan, versions: dict[str, int], now: float
) -> Effects:
    """Store the plan. A job changed since the snapshot (cancelled, say) is skipped."""
    effects = Effects()
    # Victims first: a placement may take their GPUs, and its replicas are only sent to
    # the node once the victim's replicas there have exited (see assignments).
    preempted = {p.job_id for p in plan.preemptions if _preempt(session, p, versions, effects, now)}
    for gang in plan.placements:
        if gang.job_id in preempted:
            continue
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
    spec = job_spec(job)
    attempt = job.attempt + 1
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.version == version, Job.state == "pending")
        .values(
            state="starting",
            attempt=attempt,
            master_port=gang.master_port,
            reason=None,
            recheck_at=None,
            borrowed=gang.borrowed,
            version=Job.version + 1,
        )
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    recovery.open_attempt(session, job, attempt, len(gang.replicas), now)
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


def _preempt(
    session: Session,
    preemption: Preemption,
    versions: dict[str, int],
    effects: Effects,
    now: float,
) -> bool:
    """Stop the victim's current attempt and queue it again; False if it changed meanwhile."""
    job = session.get(Job, preemption.job_id)
    version = versions.get(preemption.job_id)
    if job is None or job.version != version or job.state not in ("starting", "running"):
        return False
    replicas = session.scalars(
        select(Replica).where(
            Replica.job_id == job.id,
            Replica.attempt == job.attempt,
            Replica.state.in_(ACTIVE_REPLICA_STATES),
        )
    ).all()
    # The scheduler knows jobs by id; a user knows them by name.
    for_job = session.get(Job, preemption.for_job_id)
    reason = preemption.reason
    if for_job is not None:
        reason = reason.replace(preemption.for_job_id, f"job '{for_job.name}'")
    for replica in replicas:
        replica.desired = "stop"
        replica.reason = reason
        effects.sync_nodes.add(replica.node_id)
    recovery.close_attempt(session, job, now, Cause.PREEMPTED, reason)
    job.state = "pending"
    job.preemptions += 1
    job.borrowed = False
    job.reason = f"attempt {job.attempt} {reason}; queued again"
    effects.wake_scheduler = True
    return True
