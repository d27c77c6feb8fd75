"""Request dependencies: the control plane, the caller, the workspace in the path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm.exc import StaleDataError

from corral.server.api.errors import ApiError
from corral.server.auth import (
    Principal,
    check_workspace_access,
    hash_token,
    refuse_metrics_only,
)
from corral.server.runtime import ControlPlane
from corral.server.services.identity import authenticate_hash, workspace_by_name
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


async def principal(request: Request, cp: CP) -> Principal:
    """Who the token is. Known tokens are answered from memory for a few seconds
    (cp.principals): most requests then touch the database only for their own work."""
    return await _principal(request, cp)


async def _principal(request: Request, cp: ControlPlane) -> Principal:
    # Every route but /metrics: a metrics token is refused here, once for all of them.
    return refuse_metrics_only(await token_principal(request, cp))


async def token_principal(request: Request, cp: ControlPlane) -> Principal:
    """Whoever the token is, a metrics-only token included (for /metrics alone)."""
    return await principal_of_token(cp, bearer(request))


async def principal_of_token(cp: ControlPlane, token: str) -> Principal:
    """Whoever `token` is (a bearer header's or the console's cookie's); a 401 ApiError
    when it is not valid here."""
    digest = hash_token(token)
    found = cp.principals.get(digest)
    if found is None:
        found = await asyncio.to_thread(_authenticate, cp, digest)
        if found is None:  # not remembered: a token created a moment later works at once
            raise ApiError(401, "unauthorized", "the token is not valid on this server")
        cp.principals.put(digest, found)
    return found


def _authenticate(cp: ControlPlane, digest: str) -> Principal | None:
    with cp.store.read() as session:
        return authenticate_hash(session, digest)


Caller = Annotated[Principal, Depends(principal)]


def workspace_for(role: str) -> Callable[[str, Request], Coroutine[Any, Any, Workspace]]:
    # One dependency, not three (caller, control plane, workspace): every request pays
    # FastAPI's per-dependency cost, and most requests name a workspace.
    async def resolve(workspace: str, request: Request) -> Workspace:
        cp = control_plane(request)
        check_workspace_access(await _principal(request, cp), workspace, role)
        known = cp.workspaces.get(workspace)
        if known is None:
            known = await asyncio.to_thread(_workspace_row, cp, workspace)
            if known is None:
                raise ApiError(404, "not_found", f"workspace '{workspace}' not found")
            cp.workspaces.put(workspace, known)
        # A fresh object per request: never one shared between threads and sessions.
        return Workspace(id=known[0], name=known[1])

    return resolve


def _workspace_row(cp: ControlPlane, name: str) -> tuple[str, str] | None:
    with cp.store.read() as session:
        row = workspace_by_name(session, name)
        return None if row is None else (row.id, row.name)


ReadableWorkspace = Annotated[Workspace, Depends(workspace_for("viewer"))]
WritableWorkspace = Annotated[Workspace, Depends(workspace_for("member"))]


def in_transaction(cp: ControlPlane, fn: Callable[..., T], *args: Any) -> T:
    """`fn(session, *args)` in one transaction of the store (for asyncio.to_thread)."""
    with cp.store.transaction() as session:
        return fn(session, *args)


def retry_stale(fn: Callable[[], T], attempts: int = 5) -> T:
    """Run a transaction again when a row it read changed under it (optimistic concurrency)."""
    for _ in range(attempts - 1):
        try:
            return fn()
        except StaleDataError:
            continue
    return fn()
