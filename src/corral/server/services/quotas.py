"""Workspace GPU quotas: guaranteed GPUs per model, and what each workspace holds now."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.server.auth import Principal
from corral.server.errors import Forbidden
from corral.server.store.tables import Job, Node, Quota, Replica, Workspace
from corral.wire.api import QuotaView

ANY_MODEL = "*"


def set_quota(
    session: Session, caller: Principal, workspace: Workspace, gpus: dict[str, int]
) -> None:
    """Replace the workspace's guarantees; a zero removes that model's guarantee."""
    if not caller.cluster_admin:
        raise Forbidden("only a cluster admin may set quotas")
    session.execute(delete(Quota).where(Quota.workspace_id == workspace.id))
    for model, count in sorted(gpus.items()):
        if count > 0:
            session.add(Quota(workspace_id=workspace.id, gpu_model=_model(model), gpus=count))


def _model(name: str) -> str:
    # Node inventories report models upper-case (H100); "h100" in a request means the same.
    return name if name == ANY_MODEL else name.upper()


def quota_views(session: Session, workspaces: list[Workspace]) -> list[QuotaView]:
    ids = {w.id for w in workspaces}
    guaranteed: dict[str, dict[str, int]] = {w.id: {} for w in workspaces}
    for row in session.scalars(select(Quota).where(Quota.workspace_id.in_(ids))):
        guaranteed[row.workspace_id][row.gpu_model] = row.gpus
    used: dict[str, Counter[str]] = {w.id: Counter() for w in workspaces}
    models: dict[str, dict[int, str]] = {}
    rows = session.execute(
        select(Job.workspace_id, Replica.node_id, Replica.gpus)
        .join(Job, Replica.job_id == Job.id)
        .where(Job.workspace_id.in_(ids), Replica.state.in_(ACTIVE_REPLICA_STATES))
    ).all()
    node_ids = {node_id for _, node_id, _ in rows}
    if node_ids:
        for node_id, gpus in session.execute(
            select(Node.id, Node.gpus).where(Node.id.in_(node_ids))
        ):
            models[node_id] = {g["index"]: g["model"] for g in gpus}
    for workspace_id, node_id, gpus in rows:
        for index in gpus:
            used[workspace_id][models.get(node_id, {}).get(index, "?")] += 1
    return [
        QuotaView(
            workspace=w.name,
            guaranteed=dict(sorted(guaranteed[w.id].items())),
            used=dict(sorted(used[w.id].items())),
        )
        for w in sorted(workspaces, key=lambda w: w.name)
    ]
