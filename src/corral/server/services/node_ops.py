"""What an operator does to a node: cordon it (it keeps what runs there and takes nothing
new), uncordon it, drain it (cordoned, and its work moved elsewhere), mark it repaired
(`set-healthy`, which its next checks must confirm), delete it, and inject a fault into a
fake-GPU node. corral takes a node out by itself when its checks fail (services/health.py)
or its hardware is suspect (core.recovery)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.core.recovery import Cause
from corral.core.states import JobState, NodeCondition
from corral.server.auth import Principal
from corral.server.errors import Conflict, Forbidden, Invalid, NotFound
from corral.server.services import health
from corral.server.services.effects import Effects
from corral.server.services.scheduling import requeue
from corral.server.store.tables import RETIRED_PREFIX, HealthEvent, Job, Node, Replica
from corral.wire.health import InjectFault
from corral.wire.nodes import FaultRequest

log = logging.getLogger("corral.server.nodes")
# How a drained node's cordon reason starts, and a spot-interrupted one's (the pool
# controller counts those gone). A node only cordoned keeps what runs there; a drained
# one has its work moved off (`draining`).
DRAINED_BY = "drained by"
SPOT_INTERRUPTION = "spot interruption"


def draining(node: Node) -> str | None:
    """Why the node's work is being moved off it (drained, or its machine is being taken
    back), or None."""
    reason = node.cordon_reason or ""
    return reason if reason.startswith((DRAINED_BY, SPOT_INTERRUPTION)) else None


def node_named(session: Session, name: str) -> Node | None:
    return session.scalars(select(Node).where(Node.name == name)).first()


def _admin_node(session: Session, caller: Principal, name: str, verb: str) -> Node:
    if not caller.cluster_admin:
        raise Forbidden(f"only a cluster admin can {verb} a node")
    node = node_named(session, name)
    if node is None:
        raise NotFound.of(f"node '{name}'")
    return node


def cordon(
    session: Session, caller: Principal, name: str, now: float, why: str | None = None
) -> tuple[Node, bool]:
    """The node takes nothing new; True when that is a change. A lost or unhealthy node
    is cordoned too: it stays cordoned when it comes back."""
    node = _admin_node(session, caller, name, "cordon")
    if health.cordoned(node):
        return node, False
    node.cordon_reason = why or f"cordoned by {caller.token_name}"
    if node.condition == NodeCondition.READY:
        node.condition = NodeCondition.CORDONED
    health.event(session, node, now, "operator", node.cordon_reason)
    log.warning("node %s cordoned by %s", name, caller.token_name)
    return node, True


def uncordon(session: Session, caller: Principal, name: str, now: float) -> tuple[Node, bool]:
    """The node takes work again; True when that is a change. An unhealthy node keeps out
    until its checks pass (or `set-healthy` after a repair): the refusal says so."""
    node = _admin_node(session, caller, name, "uncordon")
    was = health.cordoned(node)
    node.cordon_reason = None
    if node.condition == NodeCondition.UNHEALTHY:
        summary = (node.health or {}).get("summary") or "its checks failed"
        if (node.health or {}).get("needs_operator"):
            then = f"inspect it, and run `corral node set-healthy {name}` once it is repaired"
        else:
            then = (
                "it comes back by itself when its checks pass, or run "
                f"`corral node set-healthy {name}` once it is repaired"
            )
        raise Conflict(f"node '{name}' is unhealthy ({summary}): {then}")
    if node.condition == NodeCondition.CORDONED:
        node.condition = NodeCondition.READY
    if was:
        health.event(session, node, now, "operator", f"uncordoned by {caller.token_name}")
        log.warning("node %s uncordoned by %s", name, caller.token_name)
    return node, was


def drain(session: Session, caller: Principal, name: str, now: float) -> tuple[Node, Effects, str]:
    """Cordon the node and move its work: training jobs are queued again from their last
    checkpoint (not charged to max_restarts); an endpoint's replicas are replaced by the
    endpoint controller, the new one ready before the old one goes."""
    why = f"{DRAINED_BY} {caller.token_name}"
    node, _ = cordon(session, caller, name, now, why)
    if draining(node) is None:  # it was only cordoned: now its work moves too
        node.cordon_reason = why
    effects, outcome = move_work(session, node, now, f"node {name} {why}", "operator")
    return node, effects, outcome


def move_work(
    session: Session, node: Node, now: float, ended: str, kind: str
) -> tuple[Effects, str]:
    """The moving half of a drain, for a node already cordoned: its jobs' attempts end
    (`ended: ...` says why) and they are queued again; its endpoint replicas are replaced.
    Recorded as a health event of `kind`; returns the effects and the outcome in words."""
    name = node.name
    effects = Effects(sync_nodes={node.id}, wake_scheduler=True, wake_endpoints=True)
    replicas = session.scalars(
        select(Replica).where(Replica.node_id == node.id, Replica.state.in_(ACTIVE_REPLICA_STATES))
    ).all()
    jobs = list(
        session.scalars(
            select(Job).where(Job.id.in_({r.job_id for r in replicas})).order_by(Job.id)
        )
    )
    moved: list[Job] = []
    endpoints = 0
    for job in jobs:
        if job.endpoint_id is not None:
            endpoints += 1
            continue
        if job.state not in (JobState.STARTING, JobState.RUNNING):
            continue
        requeue(
            session, job, Cause.PREEMPTED, f"ended: {ended}", now, effects, count_preemption=False
        )
        moved.append(job)
    outcome = f"node '{name}' drained: {len(moved)} job(s) queued again elsewhere"
    if endpoints:
        outcome += f", {endpoints} endpoint replica(s) being replaced"
    names = health.workload_names(session, moved)
    health.event(session, node, now, kind, outcome, workloads=names)
    return effects, outcome


def interrupted(
    session: Session, node_id: str, reclaimed_at: float, now: float
) -> tuple[Effects, str] | None:
    """The provider takes the node's machine back at `reclaimed_at` (a spot interruption
    notice its agent saw): cordon it with that reason and move its work, as a drain does.
    None when it was already told (an agent repeats a notice after a restart)."""
    node = session.get(Node, node_id)
    if node is None or node.name.startswith(RETIRED_PREFIX):
        return None
    at = datetime.fromtimestamp(reclaimed_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    why = f"{SPOT_INTERRUPTION}: the instance is reclaimed at {at}"
    if node.cordon_reason == why:
        return None
    node.cordon_reason = why
    if node.condition == NodeCondition.READY:
        node.condition = NodeCondition.CORDONED
    health.event(session, node, now, "interruption", why)
    log.warning("node %s: %s", node.name, why)
    return move_work(session, node, now, f"{why} (node {node.name})", "interruption")


def claim_repaired(session: Session, caller: Principal, name: str, now: float) -> Node:
    """An operator says the node is repaired: its next full check decides (health.py)."""
    node = _admin_node(session, caller, name, "mark healthy")
    node.repair_claim_at = now
    health.event(session, node, now, "operator", f"set-healthy by {caller.token_name}: checking")
    return node


def delete_node(session: Session, caller: Principal, name: str) -> str:
    """Forget the node. Refused while replicas run there (drain it first). Its history
    (replicas that ran there) keeps the row, retired: the name is free for a new agent."""
    node = _admin_node(session, caller, name, "delete")
    active = session.scalars(
        select(Replica.id).where(
            Replica.node_id == node.id, Replica.state.in_(ACTIVE_REPLICA_STATES)
        )
    ).first()
    if active is not None:
        raise Conflict(
            f"node '{name}' still runs replicas: drain it first (`corral node drain {name}`)"
        )
    used = session.scalars(select(Replica.id).where(Replica.node_id == node.id)).first()
    node_id = node.id
    if used is None:
        session.delete(node)
        return node_id
    session.execute(delete(HealthEvent).where(HealthEvent.node_id == node.id))
    retire(node)
    return node_id


def retire(node: Node) -> None:
    """Keep the row for the replicas that ran there; free its name and revoke its token."""
    node.name = f"{RETIRED_PREFIX}{node.id}"
    node.token_hash = f"{RETIRED_PREFIX}{node.id}"[:64]
    node.condition = NodeCondition.LOST
    node.connected = False
    node.cordon_reason = "deleted"


def fault(
    session: Session, caller: Principal, name: str, body: FaultRequest, now: float
) -> InjectFault:
    """Check a fault injection; the agent applies it (only to fake GPUs)."""
    node = _admin_node(session, caller, name, "inject a fault into")
    if node.gpu_backend != "fake":
        raise Conflict(
            f"node '{name}' has {node.gpu_backend} GPUs, not fake ones: faults can only be "
            "injected into a node started with --fake-gpus"
        )
    if not node.connected:
        raise Conflict(f"node '{name}' is not connected: its agent must be running to inject")
    count = len(node.gpus)
    if body.gpu is not None and body.gpu >= count:
        raise Invalid(
            f"gpu: node '{name}' has GPUs 0-{count - 1}",
            [{"path": "gpu", "message": f"expected 0 to {count - 1}"}],
        )
    needs_gpu = body.kind not in ("clear", "reboot")
    if needs_gpu and body.gpu is None:
        raise Invalid(
            f"gpu: a {body.kind} fault needs --gpu", [{"path": "gpu", "message": "required"}]
        )
    if body.kind == "xid" and body.xid is None:
        raise Invalid("xid: an xid fault needs a code", [{"path": "xid", "message": "required"}])
    what = f"{body.kind}" + (f" {body.xid}" if body.xid is not None else "")
    where = f" on GPU {body.gpu}" if body.gpu is not None else ""
    text = f"fault injected by {caller.token_name}: {what}{where}"
    health.event(session, node, now, "operator", text)
    return InjectFault(kind=body.kind, gpu=body.gpu, xid=body.xid, subcode=body.subcode)
