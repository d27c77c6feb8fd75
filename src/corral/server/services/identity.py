"""Workspaces and API tokens (join tokens: join_tokens.py)."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.server.auth import (
    ADMIN_PREFIX,
    METRICS_ROLE,
    Forbidden,
    Principal,
    check_metrics_token,
    check_workspace_access,
    hash_token,
    new_secret,
)
from corral.server.errors import Busy, Conflict, Invalid, NotFound
from corral.server.store.db import Store
from corral.server.store.tables import JoinToken, Token, Workspace
from corral.spec.names import check_name

log = logging.getLogger("corral.server")
DEFAULT_WORKSPACE = "default"
# Inserts that pick a value (a uid_index, a random name) retry this often on a collision.
_INSERT_ATTEMPTS = 5


def new_id() -> str:
    return str(uuid.uuid4())


def workspace_by_name(session: Session, name: str) -> Workspace | None:
    return session.scalars(select(Workspace).where(Workspace.name == name)).first()


def ensure_workspace(session: Session, name: str, now: float) -> Workspace:
    found = workspace_by_name(session, name)
    if found is not None:
        return found
    try:
        return _insert_workspace(session, name, now)
    except _NameTaken:  # another writer made it a moment ago
        found = workspace_by_name(session, name)
        assert found is not None
        return found


class _NameTaken(Exception):
    pass


def _insert_workspace(session: Session, name: str, now: float) -> Workspace:
    """Insert it with the next uid_index (tables.py); retry when another writer took it."""
    for _ in range(_INSERT_ATTEMPTS):
        workspace = Workspace(id=new_id(), name=name, created_at=now)
        try:
            with session.begin_nested():
                session.add(workspace)
                session.flush()
        except IntegrityError:
            if workspace_by_name(session, name) is not None:
                raise _NameTaken(name) from None
            continue  # the same uid_index as a workspace committed meanwhile: take the next
        return workspace
    raise Busy("workspaces are being created concurrently; try again")


def bootstrap(
    store: Store, now: float, home: Path, admin_token: str | None, join_token: str | None
) -> None:
    """Make a fresh control plane usable: the default workspace and the first tokens.

    The bootstrap join token (`corral up`'s local agent) never expires and has no use
    limit: it is the one a local plane restarts its agent with. Revoking it sticks.
    """
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
                session.add(
                    JoinToken(
                        id=new_id(),
                        name=_free_name(session, _join_name_taken, "bootstrap"),
                        token_hash=digest,
                        created_at=now,
                        uses=0,
                    )
                )


def _ensure_token(session: Session, token: str, now: float) -> None:
    digest = hash_token(token)
    if session.scalars(select(Token).where(Token.token_hash == digest)).first() is None:
        session.add(
            Token(
                id=new_id(),
                name=_free_name(session, lambda s, n: _token_name_taken(s, None, n), "local-admin"),
                token_hash=digest,
                role="admin",
                workspace_id=None,
                created_at=now,
            )
        )


def _free_name(session: Session, taken: Callable[[Session, str], bool], base: str) -> str:
    """`base`, else `base-2`, `base-3`, ...: a bootstrap token that changed keeps a name."""
    name, n = base, 1
    while taken(session, name):
        n += 1
        name = f"{base}-{n}"
    return name


def _token_name_taken(session: Session, workspace_id: str | None, name: str) -> bool:
    scope = (
        Token.workspace_id.is_(None) if workspace_id is None else Token.workspace_id == workspace_id
    )
    return session.scalars(select(Token.id).where(scope, Token.name == name)).first() is not None


def _join_name_taken(session: Session, name: str) -> bool:
    return session.scalars(select(JoinToken.id).where(JoinToken.name == name)).first() is not None


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
        raise Invalid(str(exc), [{"path": "name", "message": str(exc)}]) from None
    if workspace_by_name(session, name) is not None:
        raise Conflict(f"workspace '{name}' already exists")
    try:
        return _insert_workspace(session, name, now)
    except _NameTaken:
        raise Conflict(f"workspace '{name}' already exists") from None


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
    if role == METRICS_ROLE:
        check_metrics_token(principal, workspace)
    if workspace is None and not principal.cluster_admin:
        workspace = principal.workspace
    if workspace is None and role not in ("admin", METRICS_ROLE):
        raise Invalid(
            "a member or viewer token needs a workspace",
            [{"path": "workspace", "message": "required for role " + role}],
        )
    # Permission before existence: a token of workspace A learns nothing about B's.
    if not principal.cluster_admin and (
        principal.role != "admin" or principal.workspace != workspace
    ):
        raise Forbidden("only an admin of the workspace can create its tokens")
    if name is not None:
        check_token_name(name, "token name")
    ws_row = None
    if workspace is not None:
        ws_row = workspace_by_name(session, workspace)
        if ws_row is None:
            raise NotFound(f"workspace '{workspace}' not found")
    ws_id = ws_row.id if ws_row else None
    secret = new_secret(ADMIN_PREFIX)
    where = f"workspace '{workspace}'" if workspace else "the cluster"
    token = insert_named(
        session,
        lambda chosen: Token(
            id=new_id(),
            name=chosen,
            token_hash=hash_token(secret),
            role=role,
            workspace_id=ws_id,
            created_at=now,
        ),
        name,
        "token",
        f"a token named '{name}' already exists in {where}",
    )
    return token, secret, workspace


def _administered(principal: Principal, workspace: str | None) -> str | None:
    """The workspace whose tokens the caller may list and revoke: a workspace admin only
    its own; a cluster admin the one named (None: the cluster-wide tokens, or all)."""
    if principal.cluster_admin:
        return workspace
    check_workspace_access(principal, workspace or principal.workspace or "", "admin")
    return principal.workspace


def list_tokens(
    session: Session, principal: Principal, workspace: str | None
) -> list[tuple[Token, str | None]]:
    """Tokens the caller administers: a workspace admin its workspace's, a cluster admin
    every one (or one workspace's, when named). Pairs of the row and its workspace name."""
    workspace = _administered(principal, workspace)
    query = (
        select(Token, Workspace.name)
        .outerjoin(Workspace, Token.workspace_id == Workspace.id)
        .order_by(Workspace.name.is_not(None), Workspace.name, Token.name)
    )
    if workspace is not None:
        query = query.where(Workspace.name == workspace)
    return [(tok, ws) for tok, ws in session.execute(query).all()]


def revoke_token(session: Session, principal: Principal, name: str, workspace: str | None) -> Token:
    """Delete the token `name` of `workspace` (None: the caller's own scope: its
    workspace, or the cluster-wide tokens for a cluster admin). Returns the deleted row,
    whose token_hash the caller drops from its caches."""
    workspace = _administered(principal, workspace)
    ws_id: str | None = None
    if workspace is not None:
        ws_row = workspace_by_name(session, workspace)
        if ws_row is None:
            raise NotFound(f"workspace '{workspace}' not found")
        ws_id = ws_row.id
    scope = Token.workspace_id.is_(None) if ws_id is None else Token.workspace_id == ws_id
    token = session.scalars(select(Token).where(scope, Token.name == name)).first()
    if token is None:
        raise _token_not_found(session, name, workspace)
    if token.workspace_id is None and token.role == "admin":
        # Locked, so that two revocations of the last two cluster-admin tokens cannot both
        # pass this check (PostgreSQL; SQLite runs one writer at a time anyway).
        admins = session.scalars(
            select(Token.id)
            .where(Token.workspace_id.is_(None), Token.role == "admin")
            .with_for_update()
        ).all()
        if len(admins) <= 1:
            raise Conflict(
                f"'{name}' is the last cluster-admin token: create another one first "
                "(`corral token create --role admin`), or nobody could administer the cluster",
            )
    session.delete(token)
    session.flush()
    return token


def _token_not_found(session: Session, name: str, workspace: str | None) -> NotFound:
    if workspace is not None:
        return NotFound(f"token '{name}' not found in workspace '{workspace}'")
    elsewhere = session.scalars(
        select(Workspace.name)
        .join(Token, Token.workspace_id == Workspace.id)
        .where(Token.name == name)
        .order_by(Workspace.name)
    ).all()
    hint = (
        f"; tokens named '{name}' exist in workspace {', '.join(elsewhere)}: name the workspace"
        if elsewhere
        else ""
    )
    return NotFound(f"no cluster-wide token '{name}'{hint}")


Row = TypeVar("Row", Token, JoinToken)


def insert_named(
    session: Session, build: Callable[[str], Row], name: str | None, prefix: str, taken: str
) -> Row:
    """Insert the row `build(name)`, or, without a name, `build(PREFIX-<random hex>)` again
    on a collision. The default name is random, never taken from the secret: names are
    listed. A chosen name that is taken is a 409 saying `taken`."""
    for _ in range(_INSERT_ATTEMPTS):
        row = build(name or f"{prefix}-{secrets.token_hex(3)}")
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            if name is not None:
                raise Conflict(taken) from None
            continue
        return row
    raise Busy(f"could not pick a free {prefix} name; try again")


def check_token_name(name: str, what: str) -> None:
    try:
        check_name(name, what)
    except ValueError as exc:
        raise Invalid(str(exc), [{"path": "name", "message": str(exc)}]) from None
