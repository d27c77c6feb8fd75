"""/v1/whoami, /v1/workspaces, /v1/tokens, /v1/join-tokens"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from sqlalchemy import select

from corral.server.api.deps import CP, Caller
from corral.server.api.paging import Paging
from corral.server.services import identity as service
from corral.server.services import join_tokens
from corral.server.services.pages import keyset_page, list_page
from corral.server.store.tables import JoinToken, Workspace
from corral.wire.api import (
    JoinTokenCreate,
    JoinTokenList,
    JoinTokenView,
    TokenCreate,
    TokenInfo,
    TokenList,
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
def list_workspaces(caller: Caller, cp: CP, page: Paging) -> WorkspaceList:
    """By name, a page at a time: every workspace for a cluster admin, the caller's own
    otherwise."""
    query = select(Workspace)
    if not caller.cluster_admin:
        query = query.where(Workspace.id == caller.workspace_id)
    with cp.store.read() as session:
        found = keyset_page(session, query, [Workspace.name], page)
        views = [WorkspaceView(name=w.name, created_at=w.created_at) for w in found.items]
    return WorkspaceList(workspaces=views, next_cursor=found.next_cursor)


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
    # The gateways learn a workspace's tokens from the route table: at once, not at their
    # next look, or the README's `TOKEN=$(corral token create) && curl` is refused.
    cp.poke_routes()
    return TokenView(
        name=row.name, role=body.role, workspace=workspace, created_at=row.created_at, token=secret
    )


@router.get("/tokens")
def list_tokens(caller: Caller, cp: CP, page: Paging, workspace: str | None = None) -> TokenList:
    """A workspace admin sees its workspace's tokens; a cluster admin every token (or one
    workspace's, with ?workspace=): the cluster's first, then by workspace and name. Never
    a secret nor anything made from one."""
    with cp.store.read() as session:
        rows = service.list_tokens(session, caller, workspace)
        tokens = [
            TokenInfo(name=t.name, role=t.role, workspace=ws, created_at=t.created_at)
            for t, ws in rows
        ]
    found = list_page(tokens, lambda t: (t.workspace or "", t.name), (str, str), page)
    return TokenList(tokens=found.items, next_cursor=found.next_cursor)


@router.delete("/tokens/{name}", status_code=204)
async def revoke_token(name: str, caller: Caller, cp: CP, workspace: str | None = None) -> Response:
    """Revoke at once on this server; other API servers stop accepting the token within
    their auth cache's lifetime (runtime.AUTH_TTL_S, 10 s)."""

    def run() -> str:
        with cp.store.transaction() as session:
            return service.revoke_token(session, caller, name, workspace).token_hash

    digest = await asyncio.to_thread(run)
    # Here, on the event loop's thread (the cache has no lock), before the answer leaves.
    cp.principals.discard(digest)
    cp.poke_routes()  # and the gateways stop accepting it for a workspace's endpoints
    return Response(status_code=204)


@router.post("/join-tokens", status_code=201)
def create_join_token(caller: Caller, cp: CP, body: JoinTokenCreate | None = None) -> JoinTokenView:
    body = body or JoinTokenCreate()
    now = cp.clock.now()
    with cp.store.transaction() as session:
        row, secret = join_tokens.create_join_token(
            session,
            caller,
            now,
            ttl_s=body.ttl_s,
            max_uses=body.max_uses,
            name=body.name,
            labels=body.labels,
        )
        return _join_view(row, now, secret)


@router.get("/join-tokens")
def list_join_tokens(caller: Caller, cp: CP, page: Paging) -> JoinTokenList:
    """Oldest first (then by name), a page at a time; never a secret."""
    now = cp.clock.now()
    with cp.store.read() as session:
        rows = join_tokens.list_join_tokens(session, caller)
        found = list_page(rows, lambda r: (r.created_at, r.name), (float, str), page)
        views = [_join_view(r, now) for r in found.items]
    return JoinTokenList(join_tokens=views, next_cursor=found.next_cursor)


@router.delete("/join-tokens/{name}", status_code=204)
def revoke_join_token(name: str, caller: Caller, cp: CP) -> Response:
    """Nodes can no longer register with it (at once, on every server: nothing caches it).
    Nodes that did register keep their own node tokens."""
    with cp.store.transaction() as session:
        join_tokens.revoke_join_token(session, caller, name, cp.clock.now())
    return Response(status_code=204)


def _join_view(row: JoinToken, now: float, secret: str | None = None) -> JoinTokenView:
    refusal = join_tokens.join_token_state(row, now)
    return JoinTokenView(
        token=secret,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        max_uses=row.max_uses,
        uses=row.uses,
        revoked_at=row.revoked_at,
        state="active" if refusal is None else refusal.value,
    )
