"""What the endpoint controller knows of one endpoint: its facts for core.endpoints, read
from the store, and what they were read at (the applier checks that it still holds).

No decision is made here: see core/endpoints.py. The plan is written by endpoint_apply.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core import endpoints as core
from corral.core.autoscale import AutoscaleState
from corral.core.states import ACTIVE_REPLICA_STATES, JobState, NodeCondition, ReplicaState
from corral.server.services import endpoints as ep
from corral.server.services import node_ops
from corral.server.store.tables import Endpoint, Job, Node, Replica, Workspace
from corral.spec.endpoint import EndpointSpec

# Where the autoscaler's state is kept in the `endpoints.autoscale` column, beside the
# notes (strings) that services/endpoints.notes reads.
STATE_KEY = "state"


@dataclass
class Load:
    """What the gateways saw of one endpoint since it was last taken, added up (LoadBoard)."""

    in_flight: float = 0.0
    arrivals: int = 0
    held: int = 0
    # Requests in flight per replica id, where the gateways say (draining ends at 0).
    per_replica: dict[str, int] = field(default_factory=dict)
    known: bool = False  # False: no gateway answered; do not read silence as no traffic

    def merge_older(self, older: Load) -> None:
        """Fold in a load taken earlier that no decision has used yet: arrivals add up,
        the levels are the newer ones' (unless no gateway answered this time)."""
        self.arrivals += older.arrivals
        self.held = max(self.held, older.held)
        if not self.known:
            self.in_flight, self.per_replica, self.known = (
                older.in_flight,
                dict(older.per_replica),
                older.known,
            )

    def traffic(self) -> core.Traffic:
        return core.Traffic(
            in_flight=self.in_flight,
            arrivals=self.arrivals,
            held=self.held,
            per_replica=dict(self.per_replica),
            known=self.known,
        )


@dataclass(frozen=True)
class Seen:
    """One replica job as the facts saw it: the applier writes only if it is unchanged."""

    job_version: int
    replica_id: str | None
    replica_state: str | None
    ready: bool | None


@dataclass(frozen=True)
class Loaded:
    endpoint_id: str
    workspace: str  # its name: the gateways' loads are keyed by it
    facts: core.EndpointFacts
    spec: EndpointSpec
    version: int  # the endpoint row's
    seen: Mapping[str, Seen]  # job id -> what the facts were read at
    stored: Mapping[str, Any]  # the `autoscale` column as read


def load(session: Session, endpoint: Endpoint, traffic: Load | None, now: float) -> Loaded:
    """The facts of one endpoint. Raises if its stored spec does not validate (the runner
    then records why in its reason and backs off)."""
    spec = ep.endpoint_spec(endpoint)
    workspace = session.get(Workspace, endpoint.workspace_id)
    assert workspace is not None
    rows = ep.replica_rows(session, [endpoint.id])[endpoint.id]
    policy = core.EndpointPolicy(
        min_replicas=spec.min_replicas,
        max_replicas=spec.replica_limit,
        target_in_flight=spec.target_in_flight,
        idle_to_zero_s=spec.idle_to_zero_s,
        readiness_timeout_s=spec.readiness.timeout,
        drain_timeout_s=spec.drain_timeout,
        readiness_path=spec.readiness.path,
    )
    replicas = tuple(
        _replica(session, job, replica, node, spec, endpoint.revision)
        for job, replica, node in rows
    )
    stored = endpoint.autoscale if isinstance(endpoint.autoscale, dict) else {}
    facts = core.EndpointFacts(
        name=endpoint.name,
        revision=endpoint.revision,
        desired_replicas=endpoint.desired_replicas,
        policy=policy,
        replicas=replicas,
        failures=() if endpoint.deleting else _failures(session, endpoint, now),
        traffic=traffic.traffic() if traffic is not None else core.Traffic(),
        autoscale=autoscale_state(stored),
        deleting=endpoint.deleting,
    )
    seen = {
        job.id: Seen(
            job_version=job.version,
            replica_id=None if replica is None else replica.id,
            replica_state=None if replica is None else replica.state,
            ready=None if replica is None else replica.ready,
        )
        for job, replica, _ in rows
    }
    return Loaded(endpoint.id, workspace.name, facts, spec, endpoint.version, seen, dict(stored))


def autoscale_state(stored: Mapping[str, Any]) -> AutoscaleState | None:
    """The autoscaler's stored state; None where there is none or it does not read (the
    controller then starts from the stored replica count, as after an upgrade)."""
    raw = stored.get(STATE_KEY)
    if not isinstance(raw, dict):
        return None
    try:
        return AutoscaleState.from_dict(raw)
    except ValueError:
        return None


def _replica(
    session: Session,
    job: Job,
    replica: Replica | None,
    node: Node | None,
    spec: EndpointSpec,
    revision: int,
) -> core.ReplicaFacts:
    old = job.endpoint_revision != revision
    stopping = job.state == JobState.CANCELLING or job.draining_at is not None
    return core.ReplicaFacts(
        job_id=job.id,
        revision=job.endpoint_revision or 0,
        job_state=JobState(job.state),
        submitted_at=job.submitted_at,
        job_reason=job.reason,
        draining_at=job.draining_at,
        replica_id=None if replica is None else replica.id,
        replica_state=None if replica is None else ReplicaState(replica.state),
        ready=None if replica is None else replica.ready,
        ready_at=None if replica is None else replica.ready_at,
        started_at=None if replica is None else replica.started_at,
        replica_reason=None if replica is None else replica.reason,
        # Only an old replica may be stopped for its room (a rollout by replacement).
        frees_room=old and not stopping and _frees_room(session, replica, node, spec),
        sick=None if stopping else _sick(replica, node),
    )


def _sick(replica: Replica | None, node: Node | None) -> str | None:
    """Why the replica's node or GPUs are out of service by their health checks."""
    if replica is None or node is None or replica.state not in ACTIVE_REPLICA_STATES:
        return None
    if node.condition == NodeCondition.UNHEALTHY:
        summary = (node.health or {}).get("summary") or "its checks failed"
        return f"node {node.name} is unhealthy: {summary}"
    moving = node_ops.draining(node)
    if moving is not None:  # drained, or its machine is being taken back (spot)
        return f"node {node.name} is being drained: {moving}"
    bad = sorted(
        int(g["index"])
        for g in node.gpus
        if int(g["index"]) in replica.gpus and not g.get("healthy", True)
    )
    if not bad:
        return None
    gpus = ", ".join(str(i) for i in bad)
    return f"GPU {gpus} of node {node.name} is out of service by its health checks"


def _frees_room(
    session: Session, replica: Replica | None, node: Node | None, spec: EndpointSpec
) -> bool:
    """Whether `replica` gone, its node has room for one replica of `spec`."""
    if replica is None or node is None or node.condition != NodeCondition.READY:
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


def _failures(session: Session, endpoint: Endpoint, now: float) -> tuple[core.Failure, ...]:
    """The current revision's replica jobs that failed recently (crash backoff)."""
    rows = session.execute(
        select(Job.finished_at, Job.exit_code, Job.reason).where(
            Job.endpoint_id == endpoint.id,
            Job.endpoint_revision == endpoint.revision,
            Job.state == JobState.FAILED,
            Job.finished_at > now - core.FAILURE_MEMORY_S,
        )
    ).all()
    return tuple(
        core.Failure(finished_at=at, exit_code=code, reason=why)
        for at, code, why in rows
        if at is not None
    )
