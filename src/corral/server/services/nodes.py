"""Node use cases: registration, the agent channel's messages, liveness, and views."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from corral.core.lifecycle import ACTIVE_REPLICA_STATES, replica_outcome
from corral.core.recovery import Cause
from corral.core.states import Desired, NodeCondition, ReplicaState
from corral.server.auth import NODE_PREFIX, hash_token, new_secret
from corral.server.errors import Conflict, Unauthorized
from corral.server.services import health
from corral.server.services.effects import Effects
from corral.server.services.identity import new_id
from corral.server.services.jobs import CURRENT_REPLICAS
from corral.server.services.join_tokens import bound_labels
from corral.server.services.recovery import record_progress
from corral.server.services.settling import settle_job
from corral.server.services.snapshot_rows import node_runtimes
from corral.server.store.tables import RETIRED_PREFIX, Job, LogChunk, Node, Replica
from corral.wire import agent as wire
from corral.wire.api import BOUND_LABELS, GpuView, NodeView


def register_node(
    session: Session,
    request: wire.RegisterRequest,
    now: float,
    bound: Mapping[str, str] | None = None,
) -> tuple[Node, str]:
    """Create the node, or re-key an existing one of the same name for an agent that proves
    it is that node (its current node token). A join token alone never takes over a node:
    whoever held one could otherwise receive the node's desired set (other workspaces'
    environments) and report its replicas' exits.

    Its labels: the agent's own, less the keys in BOUND_LABELS, then what its join token
    binds (`bound`; None: looked up by the request's join token). A re-keyed node keeps the
    bound keys it had unless the token binds them anew."""
    if bound is None:
        bound = bound_labels(session, request.join_token)
    secret = new_secret(NODE_PREFIX)
    node = session.scalars(select(Node).where(Node.name == request.name)).first()
    if node is not None and (
        request.node_token is None
        or not hmac.compare_digest(node.token_hash, hash_token(request.node_token))
    ):
        raise Conflict(
            f"node name '{request.name}' belongs to a registered node, and this agent "
            "presented no valid credential of it (the node token in its node.json): start "
            "the agent with another --name (a reinstalled machine, or a restored database, "
            "needs a new name until nodes can be deleted)",
        )
    if node is None:
        node = Node(
            id=new_id(),
            name=request.name,
            registered_at=now,
            condition=NodeCondition.READY,
            connected=False,
        )
        session.add(node)
    node.token_hash = hash_token(secret)
    _apply_inventory(node, request.inventory)
    node.labels = {**node.labels, **bound}
    session.flush()
    return node, secret


def _apply_inventory(node: Node, inventory: wire.Inventory) -> None:
    node.hostname = inventory.hostname
    node.cpus = inventory.cpus
    node.memory_mb = inventory.memory_mb
    node.disk_mb = inventory.disk_mb
    node.gpus = [g.model_dump() for g in inventory.gpus]
    node.gpu_backend = inventory.gpu_backend
    # The agent speaks for its labels, except those the server alone sets: these stay as
    # registration made them (from the join token), whatever a node (or whoever holds its
    # token) reports, since prices, pool membership and `node remove`'s SSH target rest on them.
    kept = _server_labels(node.labels or {})
    node.labels = {
        **{k: v for k, v in inventory.labels.items() if k not in BOUND_LABELS},
        **kept,
    }
    node.agent_version = inventory.agent_version
    node.runtimes = [r.model_dump() for r in inventory.runtimes]


def _server_labels(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k in BOUND_LABELS}


def node_by_token(session: Session, token: str) -> Node | None:
    return session.scalars(select(Node).where(Node.token_hash == hash_token(token))).first()


def connect(
    session: Session, node_id: str, hello: wire.Hello, now: float
) -> tuple[dict[str, int], Effects]:
    """A node (re)connected: take its inventory and its replicas' news; return log offsets."""
    node = session.get(Node, node_id)
    if node is None:
        raise Unauthorized("unknown node")
    _apply_inventory(node, hello.inventory)
    if hello.ports is not None:
        _take_ports(node, hello.ports)
    node.address = hello.address
    node.connected = True
    node.last_heartbeat_at = now
    if node.condition == NodeCondition.LOST:
        node.condition = NodeCondition.READY
    health.keep_judgement(node)
    effects = Effects(sync_nodes={node.id}, wake_scheduler=True)
    for report in hello.replicas:
        effects.merge(replica_report(session, node.id, report, now))
    offsets = dict(
        session.execute(
            select(Replica.id, Replica.received_bytes).where(
                Replica.node_id == node.id,
                (Replica.state.in_(ACTIVE_REPLICA_STATES))
                | (Replica.log_bytes.is_(None))
                | (Replica.received_bytes < Replica.log_bytes),
            )
        ).all()
    )
    return offsets, effects


def disconnect(session: Session, node_id: str) -> None:
    node = session.get(Node, node_id)
    if node is not None:
        node.connected = False


def record_ports(session: Session, node_id: str, report: wire.Ports) -> None:
    """The node's listening TCP ports: the scheduler hands none of them out. Written only
    when they changed (the agent also repeats them every minute)."""
    node = session.get(Node, node_id)
    if node is not None:
        _take_ports(node, report.ports)


def _take_ports(node: Node, ports: list[int]) -> None:
    known = sorted(set(ports))
    if node.ports != known:
        node.ports = known


def heartbeat(session: Session, node_id: str, now: float) -> None:
    node = session.get(Node, node_id)
    if node is not None:
        node.last_heartbeat_at = now


_NO_SPEC = (defer(Job.spec),)


def warm_reports(session: Session, replica_ids: list[str]) -> list[object]:
    """Load, for a batch of reports, every replica of the jobs they are about, and those
    jobs, in two queries: each report then finds what it reads in the session, and settling
    a job reads its current replicas from `jobs.CURRENT_REPLICAS` instead of querying."""
    of_jobs = select(Replica.job_id).where(Replica.id.in_(set(replica_ids)))
    replicas = list(session.scalars(select(Replica).where(Replica.job_id.in_(of_jobs))))
    jobs = list(
        session.scalars(
            select(Job).where(Job.id.in_({r.job_id for r in replicas})).options(*_NO_SPEC)
        )
    )
    current: dict[tuple[str, int], list[Replica]] = {}
    for r in sorted(replicas, key=lambda r: r.rank):
        current.setdefault((r.job_id, r.attempt), []).append(r)
    # Reports create no replicas, so this stays true for the batch.
    session.info[CURRENT_REPLICAS] = current
    return [replicas, jobs]


def replica_report(
    session: Session, node_id: str, report: wire.ReplicaReport, now: float
) -> Effects:
    replica = session.get(Replica, report.replica_id)
    if replica is None or replica.node_id != node_id:
        return Effects()  # not ours (or long gone): the desired set will tell the agent to stop it
    if report.log_bytes is not None:
        replica.log_bytes = report.log_bytes
    if replica.state not in ACTIVE_REPLICA_STATES:
        return Effects()
    record_progress(session, replica, report, now)
    routes = False
    if report.ready is not None and report.ready != replica.ready:
        replica.ready = report.ready
        if report.ready:
            replica.ready_at = now
            if replica.desired == Desired.RUN:
                replica.reason = None  # the probe's complaint, now answered
        routes = True
    if report.ready is False and report.unready_reason and replica.desired == Desired.RUN:
        # The probe's words (GET /health answered 404 for 40 s): what the replica shows.
        replica.reason = report.unready_reason
    changed = False
    if report.pid is not None and replica.pid != report.pid:
        replica.pid = report.pid
    if report.started_at is not None and replica.started_at is None:
        replica.started_at = report.started_at
        changed = True
    if report.phase == "running" and replica.state == ReplicaState.ASSIGNED:
        replica.state = ReplicaState.RUNNING
        replica.started_at = replica.started_at or now
        changed = True
    elif report.phase == "exited":
        replica.state = replica_outcome(replica.desired, report.exit_code)
        replica.exit_code = report.exit_code
        replica.finished_at = report.finished_at or now
        if report.error:
            replica.reason = report.error
        elif replica.desired == Desired.RUN:
            # A running replica's only reason is its probe's (nodes.py, above): its exit
            # says more than the last words of a probe.
            replica.reason = None
        if report.port_conflict is not None:
            replica.infra_cause = Cause.PORT_IN_USE.value
        changed = True
    if not changed:
        return Effects(routes_changed=routes, wake_endpoints=routes)
    effects = Effects(routes_changed=routes, wake_endpoints=routes)
    if replica.state not in ACTIVE_REPLICA_STATES:
        # Its resources are free: pending work may fit, and replicas held back until
        # these GPUs were released (placed over a preemption victim) may now start.
        effects.wake_scheduler = True
        effects.sync_nodes.add(node_id)
    # The spec comes from the parsed-spec cache (read from the row only on a miss).
    job = session.get(Job, replica.job_id, options=_NO_SPEC)
    if job is None or job.attempt != replica.attempt:
        return effects
    effects.merge(settle_job(session, job, now))
    return effects


def append_log(session: Session, node_id: str, chunk: wire.LogChunk) -> None:
    replica = session.get(Replica, chunk.replica_id)
    if replica is None or replica.node_id != node_id:
        return
    end = chunk.offset + chunk.nbytes
    if end <= replica.received_bytes:
        return  # a resend of what we have
    session.add(
        LogChunk(replica_id=replica.id, offset=chunk.offset, nbytes=chunk.nbytes, data=chunk.data)
    )
    replica.received_bytes = end


def node_views(session: Session, now: float) -> list[NodeView]:
    nodes = session.scalars(
        select(Node).where(Node.name.not_like(f"{RETIRED_PREFIX}%")).order_by(Node.name)
    ).all()
    used: dict[str, set[int]] = {}
    for node_id, gpus in session.execute(
        select(Replica.node_id, Replica.gpus).where(Replica.state.in_(ACTIVE_REPLICA_STATES))
    ):
        used.setdefault(node_id, set()).update(gpus)
    return [_node_view(n, used.get(n.id, set()), now) for n in nodes]


def node_view(session: Session, node: Node, now: float) -> NodeView:
    used: set[int] = set()
    for gpus in session.scalars(
        select(Replica.gpus).where(
            Replica.node_id == node.id, Replica.state.in_(ACTIVE_REPLICA_STATES)
        )
    ):
        used.update(gpus)
    return _node_view(node, used, now)


def _node_view(node: Node, used: set[int], now: float) -> NodeView:
    judged = health.gpu_judgements(node)
    age = None if node.last_heartbeat_at is None else max(0.0, now - node.last_heartbeat_at)
    return NodeView(
        id=node.id,
        name=node.name,
        address=node.address,
        condition=node.condition,
        gpu_backend=node.gpu_backend,
        gpus=[
            GpuView(
                index=g["index"],
                model=g["model"],
                memory_mb=g["memory_mb"],
                uuid=g["uuid"],
                healthy=g.get("healthy", True),
                allocated=g["index"] in used,
                health=judged.get(g["index"], ("unknown", "none", None))[0],
                repair=judged.get(g["index"], ("unknown", "none", None))[1],
                sentence=judged.get(g["index"], ("unknown", "none", None))[2],
            )
            for g in node.gpus
        ],
        cpus=node.cpus,
        memory_mb=node.memory_mb,
        disk_mb=node.disk_mb,
        labels=node.labels,
        agent_version=node.agent_version,
        runtimes=node_runtimes(node),
        connected=node.connected,
        last_heartbeat_at=node.last_heartbeat_at,
        heartbeat_age_s=age,
        registered_at=node.registered_at,
        health=str((node.health or {}).get("health", "unknown")),
        health_summary=(node.health or {}).get("summary"),
        cordon_reason=node.cordon_reason,
    )
