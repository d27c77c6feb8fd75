"""Workspace volumes: names the control plane keeps; the directories live on the nodes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.core.states import LIVE_JOB_STATES
from corral.server.errors import Conflict, Invalid, NotFound
from corral.server.services.identity import new_id
from corral.server.store.tables import Job, Pod, Volume, Workspace
from corral.spec.names import check_name
from corral.wire.pods import VolumeView

MAX_VOLUMES = 1000  # per workspace


def create_volume(session: Session, workspace: Workspace, name: str, now: float) -> VolumeView:
    try:
        check_name(name, "volume name")
    except ValueError as exc:
        raise Invalid(str(exc), [{"path": "name", "message": str(exc)}]) from None
    count = len(list(session.scalars(select(Volume.id).where(Volume.workspace_id == workspace.id))))
    if count >= MAX_VOLUMES:
        raise Conflict(f"workspace '{workspace.name}' has {MAX_VOLUMES} volumes; delete one first")
    row = Volume(id=new_id(), workspace_id=workspace.id, name=name, created_at=now)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"volume '{name}' already exists in workspace '{workspace.name}'") from None
    return VolumeView(name=name, workspace=workspace.name, created_at=now)


def users(session: Session, workspace_id: str, name: str) -> list[str]:
    """The live pods and jobs that mount volume `name`."""
    found = [
        f"pod '{pod}'"
        for pod, spec in session.execute(
            select(Pod.name, Pod.spec).where(
                Pod.workspace_id == workspace_id, Pod.desired == "running"
            )
        )
        if name in (spec.get("volumes") or {})
    ]
    found += [
        f"job '{job}'"
        for job, spec, pod_id in session.execute(
            select(Job.name, Job.spec, Job.pod_id).where(
                Job.workspace_id == workspace_id, Job.state.in_(LIVE_JOB_STATES)
            )
        )
        if pod_id is None and name in (spec.get("volumes") or {})
    ]
    return sorted(found)


def list_volumes(session: Session, workspace: Workspace) -> list[VolumeView]:
    rows = session.scalars(
        select(Volume).where(Volume.workspace_id == workspace.id).order_by(Volume.name)
    )
    return [
        VolumeView(
            name=r.name,
            workspace=workspace.name,
            created_at=r.created_at,
            used_by=users(session, workspace.id, r.name),
        )
        for r in rows
    ]


def delete_volume(session: Session, workspace: Workspace, name: str) -> None:
    row = session.scalars(
        select(Volume).where(Volume.workspace_id == workspace.id, Volume.name == name)
    ).first()
    if row is None:
        raise NotFound(f"volume '{name}' not found in workspace '{workspace.name}'")
    using = users(session, workspace.id, name)
    if using:
        raise Conflict(
            f"volume '{name}' is mounted by {', '.join(using)}; stop them first (its files "
            "would go from under them)"
        )
    session.delete(row)


def check_volumes(session: Session, workspace: Workspace, volumes: dict[str, str]) -> None:
    if not volumes:
        return
    known = set(
        session.scalars(
            select(Volume.name).where(
                Volume.workspace_id == workspace.id, Volume.name.in_(list(volumes))
            )
        )
    )
    missing = sorted(set(volumes) - known)
    if missing:
        raise Invalid(
            f"no volume '{missing[0]}' in workspace '{workspace.name}': create it with "
            f"`corral volume create {missing[0]}`",
            [{"path": f"volumes.{missing[0]}", "message": "no such volume"}],
        )
