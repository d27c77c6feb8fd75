"""/v1/whoami, /v1/workspaces, /v1/tokens, /v1/join-tokens"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from corral.server.api.deps import CP, Caller
from corral.server.services import identity as service
from corral.server.store.tables import Workspace
from corral.wire.api import (
    JoinTokenView,
    TokenCreate,
    TokenView,
    WhoAmI,
    WorkspaceCreate,
    WorkspaceList,
    WorkspaceView,
)

router = APIRouter(prefix="/v1", tags=["identity"])


@router.get("/whoami")
def whoami(caller: Caller) -> WhoAmI:
    return WhoAmI(token=caller.token_name, role=caller.role, workspace=caller.workspace)


@router.get("/workspaces")
def list_workspaces(caller: Caller, cp: CP) -> WorkspaceList:
    query = select(Workspace).order_by(Workspace.name)
    if not caller.cluster_admin:
        query = query.where(Workspace.id == caller.workspace_id)
    with cp.store.read() as session:
        rows = session.scalars(query).all()
    return WorkspaceList(
        workspaces=[WorkspaceView(name=w.name, created_at=w.created_at) for w in rows]
    )


@router.post("/workspaces", status_code=201)
def create_workspace(body: WorkspaceCreate, caller: Caller, cp: CP) -> WorkspaceView:
    with cp.store.transaction() as session:
        row = service.create_workspace(session, caller, body.name, cp.clock.now())
    return WorkspaceView(name=row.name, created_at=row.created_at)


@router.post("/tokens", status_code=201)
def create_token(body: TokenCreate, caller: Caller, cp: CP) -> TokenView:
    with cp.store.transaction() as session:
        row, secret, workspace = service.create_token(
            session,
            caller,
            role=body.role,
            workspace=body.workspace,
            name=body.name,
            now=cp.clock.now(),
        )
    return TokenView(
        name=row.name, role=body.role, workspace=workspace, created_at=row.created_at, token=secret
    )


@router.post("/join-tokens", status_code=201)
def create_join_token(caller: Caller, cp: CP) -> JoinTokenView:
    with cp.store.transaction() as session:
        secret, created = service.create_join_token(session, caller, cp.clock.now())
    return JoinTokenView(token=secret, created_at=created)
