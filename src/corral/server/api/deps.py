"""Request dependencies: the control plane, the caller, the workspace in the path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm.exc import StaleDataError

from corral.server.api.errors import ApiError
from corral.server.auth import Principal, check_workspace_access
from corral.server.runtime import ControlPlane
from corral.server.services.identity import authenticate, workspace_by_name
from corral.server.store.tables import Workspace

T = TypeVar("T")


def control_plane(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.cp
    return cp


CP = Annotated[ControlPlane, Depends(control_plane)]


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing token: send `Authorization: Bearer <token>`")
    return token.strip()


def principal(request: Request, cp: CP) -> Principal:
    token = bearer(request)
    with cp.store.read() as session:
        found = authenticate(session, token)
    if found is None:
        raise ApiError(401, "unauthorized", "the token is not valid on this server")
    return found


Caller = Annotated[Principal, Depends(principal)]


def workspace_for(role: str) -> Callable[[str, Principal, ControlPlane], Workspace]:
    def resolve(workspace: str, caller: Caller, cp: CP) -> Workspace:
        check_workspace_access(caller, workspace, role)
        with cp.store.read() as session:
            row = workspace_by_name(session, workspace)
        if row is None:
            raise ApiError(404, "not_found", f"workspace '{workspace}' not found")
        return row

    return resolve


ReadableWorkspace = Annotated[Workspace, Depends(workspace_for("viewer"))]
WritableWorkspace = Annotated[Workspace, Depends(workspace_for("member"))]


def retry_stale(fn: Callable[[], T], attempts: int = 5) -> T:
    """Run a transaction again when a row it read changed under it (optimistic concurrency)."""
    for _ in range(attempts - 1):
        try:
            return fn()
        except StaleDataError:
            continue
    return fn()
