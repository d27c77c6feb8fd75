"""One endpoint's reconciliation: autoscale, replace, roll out, drain. Called per tick.

The replica count comes from core.autoscale (pure). What to start, drain or stop is decided
here from the endpoint's replica jobs; every change is a job submitted or cancelled, or a
job marked draining (the gateway stops sending it requests and it finishes what it has).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core import autoscale, rollout
from corral.core.lifecycle import ACTIVE_REPLICA_STATES, LIVE_JOB_STATES
from corral.server.services import endpoints as ep
from corral.server.services.effects import Effects
from corral.server.services.jobs import cancel_job, submit_job
from corral.server.store.tables import Endpoint, Job, Node, Replica, Workspace
from corral.spec.endpoint import EndpointSpec

# A replica that keeps failing is retried after 2^k seconds, at most this long.
MAX_BACKOFF_S = 60.0
FAILURE_MEMORY_S = 600.0


@dataclass
class Load:
    """What the gateways saw of one endpoint since the last tick, added up."""

    in_flight: float = 0.0
    arrivals: int = 0
    held: int = 0
    # Requests in flight per replica id, where the gateways say (draining ends at 0).
    per_replica: dict[str, int] = field(default_factory=dict)
    known: bool = False  # False: no gateway answered; do not read silence as no traffic


@dataclass
class Memory:
    """The controller's in-memory state for one endpoint (rebuilt after a restart)."""

    scaler: autoscale.AutoscaleState


Row = tuple[Job, Replica | None, Node | None]


def reconcile(
    session: Session, endpoint: Endpoint, memory: Memory, load: Load, now: float
) -> Effects:
    spec = ep.endpoint_spec(endpoint)
    workspace = session.get(Workspace, endpoint.workspace_id)
    assert workspace is not None
    rows = ep.replica_rows(session, [endpoint.id])[endpoint.id]
    effects = Effects()
    if endpoint.deleting:
        return _delete(session, endpoint, rows, load, now)

    ready = sum(1 for job, r, _ in rows if ep.replica_state(job, r) == "ready")
    policy = autoscale.AutoscalePolicy(
        target_in_flight=spec.target_in_flight,
        min_replicas=spec.min_replicas,
        max_replicas=spec.replica_limit,
        scale_to_zero_after_s=spec.idle_to_zero_s,
    )
    sample = (
        autoscale.LoadSample(
            at=now, in_flight=load.in_flight, arrivals=load.arrivals, held=load.held
        )
        if load.known or load.held
        else None
    )
    decision = autoscale.decide(policy, memory.scaler, now, ready, sample)
    memory.scaler = decision.state
    desired = decision.desired
    if endpoint.desired_replicas != desired:
        endpoint.desired_replicas = desired
        effects.routes_changed = True

    live = [row for row in rows if not _stopping(row[0])]
    current = [row for row in live if row[0].endpoint_revision == endpoint.revision]
    old = [row for row in live if row[0].endpoint_revision != endpoint.revision]

    # Replicas that will not serve: stuck loading past the readiness timeout, or failing
    # liveness. They get no traffic (the gateway routes to ready ones only); replace them.
    broken = [row for row in current if _broken(row, spec, now)]
    healthy = [row for row in current if row not in broken]
    missing = desired - len(healthy)
    failing = None
    if missing > 0:
        failing = _backoff(session, endpoint, now)
        if failing is None:
            for _ in range(missing):
                job = submit_job(session, workspace, ep.replica_job_spec(endpoint, spec), now)
                job.endpoint_id = endpoint.id
                job.endpoint_revision = endpoint.revision
            effects.wake_scheduler = True
    for job, _, _ in broken:
        effects.merge(cancel_job(session, job, now))
    if missing < 0:
        # Fewer wanted: not-yet-ready ones go first (no traffic lost), then the newest.
        extra = sorted(
            healthy,
            key=lambda row: (ep.replica_state(row[0], row[1]) == "ready", row[0].submitted_at),
        )[:-missing]
        for row in extra:
            effects.merge(_retire(session, row, now))
        healthy = [row for row in healthy if row not in extra]

    statuses = [_status(row) for row in healthy]
    kinds = [rollout.pending_kind(job.reason) for job, _, _ in healthy if job.state == "pending"]
    plan = rollout.decide(
        rollout.RolloutFacts(
            revision=endpoint.revision,
            desired=desired,
            min_replicas=spec.min_replicas,
            old=tuple(_old(session, row, spec, rollout.PendingKind.ROOM in kinds) for row in old),
            new_ready=sum(1 for s in statuses if s.phase == rollout.Phase.READY),
            new_starting=sum(
                1 for s in statuses if s.phase in (rollout.Phase.STARTING, rollout.Phase.UNREADY)
            ),
            new_waiting_for_room=kinds.count(rollout.PendingKind.ROOM),
            stopping=sum(1 for row in rows if _stopping(row[0])),
            old_stopping=sum(
                1
                for job, _, _ in rows
                if _stopping(job) and job.endpoint_revision != endpoint.revision
            ),
        )
    )
    by_id = {row[0].id: row for row in old}
    for job_id in plan.stop:
        effects.merge(cancel_job(session, by_id[job_id][0], now))
    for job_id in plan.retire:
        effects.merge(_retire(session, by_id[job_id], now))
    effects.merge(_finish_draining(session, rows, spec, load, now))

    status = rollout.EndpointStatus(
        desired=desired,
        replicas=tuple(statuses),
        readiness_path=spec.readiness.path,
        rollout=plan.reason,
        failing=failing,
        idle=decision.stable_in_flight == 0 and not decision.panicking,
    )
    reason = rollout.headline(status)
    if endpoint.reason != reason:
        endpoint.reason = reason
    public = rollout.public_reason(status, kinds)
    notes = {"autoscaler": decision.reason, **({"public": public} if public else {})}
    if ep.notes(endpoint) != notes:
        if ep.notes(endpoint).get("public") != public:
            effects.routes_changed = True  # the gateways' 503s say it
        endpoint.autoscale = notes
    return effects


def _stopping(job: Job) -> bool:
    """Draining or being stopped: the room it holds comes free soon."""
    return job.state == "cancelling" or (
        job.draining_at is not None and job.state in LIVE_JOB_STATES
    )


def _status(row: Row) -> rollout.ReplicaStatus:
    job, replica, _ = row
    if job.state == "pending":
        return rollout.ReplicaStatus(rollout.Phase.PENDING, job.reason)
    state = ep.replica_state(job, replica)
    if state == "ready":
        return rollout.ReplicaStatus(rollout.Phase.READY)
    running = replica is not None and replica.state == "running"
    # A running replica's reason is its readiness probe's words (the agent reports them).
    why = replica.reason if running and replica is not None else None
    phase = rollout.Phase.UNREADY if state == "unready" else rollout.Phase.STARTING
    return rollout.ReplicaStatus(phase, why)


def _old(session: Session, row: Row, spec: EndpointSpec, room_wanted: bool) -> rollout.OldReplica:
    job, replica, node = row
    return rollout.OldReplica(
        id=job.id,
        ready=ep.replica_state(job, replica) == "ready",
        submitted_at=job.submitted_at,
        frees_room=room_wanted and _frees_room(session, replica, node, spec),
    )


def _frees_room(
    session: Session, replica: Replica | None, node: Node | None, spec: EndpointSpec
) -> bool:
    """Whether `replica` gone, its node has room for one replica of `spec`."""
    if replica is None or node is None or node.condition != "ready":
        return False
    others = session.execute(
        select(Replica.cpus, Replica.memory_mb, Replica.disk_mb, Replica.gpus).where(
            Replica.node_id == node.id,
            Replica.state.in_(ACTIVE_REPLICA_STATES),
            Replica.id != replica.id,
        )
    ).all()
    want = spec.resources
    cpus = node.cpus - sum(o.cpus for o in others)
    memory = node.memory_mb - sum(o.memory_mb for o in others)
    disk = node.disk_mb - sum(o.disk_mb for o in others)
    if cpus < want.cpus or memory < want.memory or disk < want.disk:
        return False
    if want.gpus.count == 0:
        return True
    taken = {i for o in others for i in o.gpus}
    model = want.gpus.type.upper() if want.gpus.type else None
    low = want.gpus.min_memory
    free = [
        g
        for g in node.gpus
        if g.get("index") not in taken
        and (model is None or model in str(g.get("model", "")).upper())
        and (low is None or int(g.get("memory_mb", 0)) >= low)
    ]
    return len(free) >= want.gpus.count


def _broken(row: Row, spec: EndpointSpec, now: float) -> bool:
    job, replica, _ = row
    if replica is None or replica.state != "running":
        return False
    if replica.ready is False and replica.ready_at is not None:
        return True  # it was ready, then failed its liveness probes
    started = replica.started_at or job.submitted_at
    return not replica.ready and now - started > spec.readiness.timeout


def _retire(session: Session, row: Row, now: float) -> Effects:
    job, replica, _ = row
    if ep.replica_state(job, replica) != "ready":
        return cancel_job(session, job, now)
    job.draining_at = now
    return Effects(routes_changed=True)


def _finish_draining(
    session: Session, rows: list[Row], spec: EndpointSpec, load: Load, now: float
) -> Effects:
    """Stop draining replicas once their requests are done or the drain timeout passed."""
    effects = Effects()
    for job, replica, _ in rows:
        if job.draining_at is None or job.state == "cancelling":
            continue
        busy = load.per_replica.get(replica.id, 0) if replica is not None else 0
        # Without a per-replica count from the gateways, give the gateway a moment to stop
        # routing to it and in-flight requests the drain timeout.
        quiet = load.known and replica is not None and replica.id in load.per_replica and busy == 0
        waited = now - job.draining_at
        if (quiet and waited >= 0.5) or waited >= spec.drain_timeout:
            effects.merge(cancel_job(session, job, now))
    return effects


def _backoff(session: Session, endpoint: Endpoint, now: float) -> str | None:
    """Why not to start a replica now (it keeps failing), or None."""
    failed = session.execute(
        select(Job.finished_at, Job.exit_code, Job.reason)
        .where(
            Job.endpoint_id == endpoint.id,
            Job.endpoint_revision == endpoint.revision,
            Job.state == "failed",
            Job.finished_at > now - FAILURE_MEMORY_S,
        )
        .order_by(Job.finished_at.desc())
    ).all()
    if not failed:
        return None
    last_at, code, why = failed[0]
    last_at = last_at or now
    wait = min(MAX_BACKOFF_S, 2.0 ** (len(failed) - 1))
    if now >= last_at + wait:
        return None
    detail = f"exit code {code}" if code is not None else (why or "it failed")
    return (
        f"replicas keep failing ({len(failed)} in {FAILURE_MEMORY_S / 60:g}m, last: {detail}); "
        f"next try in {last_at + wait - now:.0f}s — see `corral endpoint logs {endpoint.name}`"
    )


def _delete(
    session: Session, endpoint: Endpoint, rows: list[Row], load: Load, now: float
) -> Effects:
    spec = ep.endpoint_spec(endpoint)
    effects = Effects(routes_changed=True)
    for row in rows:
        if row[0].draining_at is None and row[0].state != "cancelling":
            effects.merge(_retire(session, row, now))
    effects.merge(_finish_draining(session, rows, spec, load, now))
    if not rows:
        session.delete(endpoint)
    return effects
