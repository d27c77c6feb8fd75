"""Workspaces, tokens and join tokens."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.server.api.errors import ApiError
from corral.server.auth import (
    ADMIN_PREFIX,
    JOIN_PREFIX,
    Forbidden,
    Principal,
    hash_token,
    new_secret,
)
from corral.server.store.db import Store
from corral.server.store.tables import JoinToken, Token, Workspace
from corral.spec.job import check_name

log = logging.getLogger("corral.server")
DEFAULT_WORKSPACE = "default"


def new_id() -> str:
    return str(uuid.uuid4())


def workspace_by_name(session: Session, name: str) -> Workspace | None:
    return session.scalars(select(Workspace).where(Workspace.name == name)).first()


def ensure_workspace(session: Session, name: str, now: float) -> Workspace:
    found = workspace_by_name(session, name)
    if found is not None:
        return found
    workspace = Workspace(id=new_id(), name=name, created_at=now)
    session.add(workspace)
    session.flush()
    return workspace


def bootstrap(
    store: Store, now: float, home: Path, admin_token: str | None, join_token: str | None
) -> None:
    """Make a fresh control plane usable: the default workspace and the first tokens."""
    with store.transaction() as session:
        ensure_workspace(session, DEFAULT_WORKSPACE, now)
        if admin_token:
            _ensure_token(session, admin_token, now)
        elif session.scalars(select(Token).where(Token.workspace_id.is_(None))).first() is None:
            token = new_secret(ADMIN_PREFIX)
            _ensure_token(session, token, now)
            path = home / "admin-token"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(token + "\n")
            log.warning("created the first admin token; it is in %s", path)
        if join_token:
            digest = hash_token(join_token)
            if (
                session.scalars(select(JoinToken).where(JoinToken.token_hash == digest)).first()
                is None
            ):
                session.add(JoinToken(id=new_id(), token_hash=digest, created_at=now))


def _ensure_token(session: Session, token: str, now: float) -> None:
    digest = hash_token(token)
    if session.scalars(select(Token).where(Token.token_hash == digest)).first() is None:
        session.add(
            Token(
                id=new_id(),
                name="local-admin",
                token_hash=digest,
                role="admin",
                workspace_id=None,
                created_at=now,
            )
        )


def authenticate_hash(session: Session, digest: str) -> Principal | None:
    row = session.execute(
        select(Token, Workspace.name)
        .outerjoin(Workspace, Token.workspace_id == Workspace.id)
        .where(Token.token_hash == digest)
    ).first()
    if row is None:
        return None
    tok, ws_name = row
    return Principal(tok.id, tok.name, tok.role, tok.workspace_id, ws_name)


def create_workspace(session: Session, principal: Principal, name: str, now: float) -> Workspace:
    if not principal.cluster_admin:
        raise Forbidden("only a cluster admin can create workspaces")
    try:
        check_name(name, "workspace name")
    except ValueError as exc:
        raise ApiError(422, "invalid", str(exc), [{"path": "name", "message": str(exc)}]) from None
    if workspace_by_name(session, name) is not None:
        raise ApiError(409, "conflict", f"workspace '{name}' already exists")
    workspace = Workspace(id=new_id(), name=name, created_at=now)
    session.add(workspace)
    try:
        session.flush()
    except IntegrityError:
        raise ApiError(409, "conflict", f"workspace '{name}' already exists") from None
    return workspace


def create_token(
    session: Session,
    principal: Principal,
    *,
    role: str,
    workspace: str | None,
    name: str | None,
    now: float,
) -> tuple[Token, str, str | None]:
    """Returns the row, the secret (shown once) and the workspace name."""
    if workspace is None and not principal.cluster_admin:
        workspace = principal.workspace
    if workspace is None and role != "admin":
        raise ApiError(
            422,
            "invalid",
            "a member or viewer token needs a workspace",
            [{"path": "workspace", "message": "required for role " + role}],
        )
    ws_row = None
    if workspace is not None:
        ws_row = workspace_by_name(session, workspace)
        if ws_row is None:
            raise ApiError(404, "not_found", f"workspace '{workspace}' not found")
    if not principal.cluster_admin and (
        principal.role != "admin" or principal.workspace != workspace
    ):
        raise Forbidden("only an admin of the workspace can create its tokens")
    secret = new_secret(ADMIN_PREFIX)
    token = Token(
        id=new_id(),
        name=name or f"{role}-{secret[-6:]}",
        token_hash=hash_token(secret),
        role=role,
        workspace_id=ws_row.id if ws_row else None,
        created_at=now,
    )
    session.add(token)
    session.flush()
    return token, secret, workspace


def create_join_token(session: Session, principal: Principal, now: float) -> tuple[str, float]:
    if not principal.cluster_admin:
        raise Forbidden("only a cluster admin can create join tokens")
    secret = new_secret(JOIN_PREFIX)
    session.add(JoinToken(id=new_id(), token_hash=hash_token(secret), created_at=now))
    return secret, now


def join_token_valid(session: Session, token: str) -> bool:
    digest = hash_token(token)
    return (
        session.scalars(select(JoinToken).where(JoinToken.token_hash == digest)).first() is not None
    )
