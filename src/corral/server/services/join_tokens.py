"""Join tokens: what lets an agent register a node. They expire, can be limited to N
registrations and revoked; a refusal says which."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from corral.server.auth import (
    JOIN_PREFIX,
    Forbidden,
    JoinRefusal,
    JoinTokenRejected,
    Principal,
    hash_token,
    new_secret,
)
from corral.server.errors import NotFound
from corral.server.services.identity import check_token_name, insert_named, new_id
from corral.server.store.tables import JoinToken
from corral.wire.api import DEFAULT_JOIN_TTL_S


def join_token_state(row: JoinToken, now: float) -> JoinRefusal | None:
    """Why `row` cannot register a node at `now`, or None when it can."""
    if row.revoked_at is not None:
        return JoinRefusal.REVOKED
    if row.expires_at is not None and now >= row.expires_at:
        return JoinRefusal.EXPIRED
    if row.max_uses is not None and row.uses >= row.max_uses:
        return JoinRefusal.USED_UP
    return None


def create_join_token(
    session: Session,
    principal: Principal,
    now: float,
    *,
    ttl_s: float | None = DEFAULT_JOIN_TTL_S,
    max_uses: int | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[JoinToken, str]:
    """A new join token and its secret (shown once). ttl_s None: it never expires;
    max_uses None: any number of nodes may register with it. `labels` are set by the server
    on each node registering with it (nodes.register_node), over the agent's own."""
    if not principal.cluster_admin:
        raise Forbidden("only a cluster admin can create join tokens")
    if name is not None:
        check_token_name(name, "join token name")
    secret = new_secret(JOIN_PREFIX)
    row = insert_named(
        session,
        lambda chosen: JoinToken(
            id=new_id(),
            name=chosen,
            token_hash=hash_token(secret),
            created_at=now,
            expires_at=None if ttl_s is None else now + ttl_s,
            max_uses=max_uses,
            uses=0,
            labels=dict(labels) if labels else None,
        ),
        name,
        "join",
        f"a join token named '{name}' already exists",
    )
    return row, secret


def list_join_tokens(session: Session, principal: Principal) -> list[JoinToken]:
    if not principal.cluster_admin:
        raise Forbidden("only a cluster admin can list join tokens")
    return list(session.scalars(select(JoinToken).order_by(JoinToken.created_at, JoinToken.name)))


def revoke_join_token(session: Session, principal: Principal, name: str, now: float) -> JoinToken:
    """Nodes can no longer register with it; nodes that registered with it stay."""
    if not principal.cluster_admin:
        raise Forbidden("only a cluster admin can revoke join tokens")
    row = session.scalars(select(JoinToken).where(JoinToken.name == name)).first()
    if row is None:
        raise NotFound(f"join token '{name}' not found")
    if row.revoked_at is None:
        row.revoked_at = now
        session.flush()
    return row


def bound_labels(session: Session, token: str) -> dict[str, str]:
    """The labels the join token `token` binds to the nodes registering with it ({} for an
    unknown token or one binding none)."""
    digest = hash_token(token)
    labels = session.scalars(select(JoinToken.labels).where(JoinToken.token_hash == digest)).first()
    return dict(labels or {})


def consume_join_token(session: Session, token: str, now: float) -> JoinToken:
    """Check `token` for a registration at `now` and count the use, in the caller's
    transaction (roll it back and the use is not counted).

    Raises JoinTokenRejected saying why (unknown, revoked, expired, used up).
    """
    digest = hash_token(token)
    row = session.scalars(select(JoinToken).where(JoinToken.token_hash == digest)).first()
    if row is None:
        raise JoinTokenRejected(JoinRefusal.UNKNOWN, "the join token is not valid on this server")
    # One conditional UPDATE, not read-then-write: two agents racing for the last use of
    # a token cannot both get it (PostgreSQL re-checks the WHERE on the row it waited for).
    counted = session.execute(
        update(JoinToken)
        .where(
            JoinToken.id == row.id,
            JoinToken.revoked_at.is_(None),
            or_(JoinToken.expires_at.is_(None), JoinToken.expires_at > now),
            or_(JoinToken.max_uses.is_(None), JoinToken.uses < JoinToken.max_uses),
        )
        .values(uses=JoinToken.uses + 1)
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if counted.rowcount == 1:  # type: ignore[attr-defined]
        return row
    reason = join_token_state(row, now) or JoinRefusal.USED_UP
    raise JoinTokenRejected(reason, _refusal_message(row, reason))


def _refusal_message(row: JoinToken, reason: JoinRefusal) -> str:
    what = f"the join token '{row.name}'"
    ask = "; ask a cluster admin for a new one (`corral node join-token create`)"
    if reason is JoinRefusal.REVOKED:
        return f"{what} was revoked{ask}"
    if reason is JoinRefusal.EXPIRED:
        when = datetime.fromtimestamp(row.expires_at or 0.0, UTC).strftime("%Y-%m-%d %H:%M:%S")
        return f"{what} expired at {when} UTC{ask}"
    return f"{what} is used up: {row.uses} of {row.max_uses} registrations{ask}"
