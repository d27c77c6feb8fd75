"""`corral node get`: one node, its GPUs' signals and health, its health events and what runs
there. A workspace's token sees only its own workloads, in the list and in the events."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.server.auth import Principal
from corral.server.errors import NotFound
from corral.server.services import health
from corral.server.services.nodes import node_view
from corral.server.store.tables import HealthEvent, Job, Node, Replica, Workspace
from corral.wire.nodes import HealthEventView, NodeDetail, NodeWorkload

EVENTS_SHOWN = 50


def node_detail(session: Session, caller: Principal, name: str, now: float) -> NodeDetail:
    node = session.scalars(select(Node).where(Node.name == name)).first()
    if node is None:
        raise NotFound.of(f"node '{name}'")
    view = node_view(session, node, now)
    if not caller.cluster_admin:
        view = view.model_copy(update={"address": None})
    judged = node.health or {}
    events = [
        _event(e, caller)
        for e in health.events_of(session, node.id, EVENTS_SHOWN)
        # Who did what to a node is the operators' business.
        if caller.cluster_admin or e.kind != "operator"
    ]
    last_xid: dict[str, HealthEventView] = {}
    for e in events:
        if e.kind == "xid" and e.gpu is not None:
            last_xid.setdefault(str(e.gpu), e)
    return NodeDetail(
        node=view,
        repair=str(judged.get("repair", "none")),
        needs_operator=bool(judged.get("needs_operator", False)),
        findings=list(judged.get("findings", [])),
        signals=node.health_signals if caller.cluster_admin else None,
        health_at=node.health_at,
        boot_id=node.boot_id if caller.cluster_admin else None,
        repair_claim_at=node.repair_claim_at,
        last_xid=last_xid,
        events=events,
        workloads=_workloads(session, node, caller),
    )


def _visible(caller: Principal, workload: str) -> bool:
    """Workloads are stored as workspace/job: a workspace token sees its own."""
    if caller.workspace_id is None:
        return True
    return workload.split("/", 1)[0] == caller.workspace


def _event(e: HealthEvent, caller: Principal) -> HealthEventView:
    return HealthEventView(
        at=e.at,
        kind=e.kind,
        text=e.text,
        gpu=e.gpu_index,
        code=e.code,
        health=e.health,
        workloads=[w for w in e.workloads or [] if _visible(caller, w)],
    )


def _workloads(session: Session, node: Node, caller: Principal) -> list[NodeWorkload]:
    query = (
        select(Workspace.name, Job.name, Job.endpoint_id, Replica.rank, Replica.gpus, Replica.state)
        .join(Job, Job.id == Replica.job_id)
        .join(Workspace, Workspace.id == Job.workspace_id)
        .where(Replica.node_id == node.id, Replica.state.in_(ACTIVE_REPLICA_STATES))
        .order_by(Workspace.name, Job.name, Replica.rank)
    )
    if caller.workspace_id is not None:
        query = query.where(Job.workspace_id == caller.workspace_id)
    return [
        NodeWorkload(
            workspace=ws,
            job=job,
            kind="endpoint" if endpoint_id is not None else "job",
            rank=rank,
            gpus=list(gpus),
            state=str(state),
        )
        for ws, job, endpoint_id, rank, gpus, state in session.execute(query)
    ]
