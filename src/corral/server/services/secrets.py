"""Workspace secrets: set, list, delete; the check that what a spec names exists; and the
values, decrypted only for a node's desired set (services/assignments.py).

Nothing here returns a value to a caller of the API: views carry names and times.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.core.lifecycle import LIVE_JOB_STATES
from corral.server.errors import Conflict, Invalid, NotFound
from corral.server.secretbox import SecretBox, SecretDecryptError
from corral.server.services.identity import new_id
from corral.server.store.tables import Endpoint, Job, Secret, Workspace
from corral.wire.api import SecretInfo

log = logging.getLogger("corral.server.secrets")


def set_secret(
    session: Session, box: SecretBox, workspace: Workspace, name: str, value: str, now: float
) -> tuple[SecretInfo, bool]:
    """Create or replace; True when it was created. Replicas started from now on get the
    new value; running ones keep the one they started with."""
    ciphertext = box.encrypt(value)
    secret = _find(session, workspace.id, name)
    created = secret is None
    if secret is None:
        try:
            with session.begin_nested():
                secret = Secret(
                    id=new_id(),
                    workspace_id=workspace.id,
                    name=name,
                    ciphertext=ciphertext,
                    created_at=now,
                    updated_at=now,
                )
                session.add(secret)
        except IntegrityError:  # created by another request meanwhile: this one replaces it
            secret = _find(session, workspace.id, name)
            created = False
            assert secret is not None
    if not created:
        secret.ciphertext = ciphertext
        secret.updated_at = now
    info = SecretInfo(name=name, created_at=secret.created_at, updated_at=secret.updated_at)
    return info, created


def list_secrets(session: Session, workspace: Workspace) -> list[SecretInfo]:
    rows = session.execute(
        select(Secret.name, Secret.created_at, Secret.updated_at)
        .where(Secret.workspace_id == workspace.id)
        .order_by(Secret.name)
    )
    return [SecretInfo(name=n, created_at=c, updated_at=u) for n, c, u in rows]


def delete_secret(session: Session, workspace: Workspace, name: str) -> None:
    """Refused while a live job or endpoint names it: its next replica would start without
    it. Stop those first, or `set` a new value instead (that is how a secret is rotated)."""
    secret = _find(session, workspace.id, name)
    if secret is None:
        raise NotFound.of(f"secret '{name}' in workspace '{workspace.name}'")
    users = _users(session, workspace.id, name)
    if users:
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        raise Conflict(
            f"secret '{name}' is used by {shown}; cancel or update them first, or replace "
            f"its value with `corral secret set {name}`",
        )
    session.delete(secret)


def _users(session: Session, workspace_id: str, name: str) -> list[str]:
    # Specs are JSON; the few live ones of one workspace are read and looked into here
    # rather than with each database's own JSON operators.
    jobs = session.execute(
        select(Job.name, Job.spec, Job.endpoint_id).where(
            Job.workspace_id == workspace_id, Job.state.in_(LIVE_JOB_STATES)
        )
    )
    found = [
        f"job '{job}'"
        for job, spec, endpoint_id in jobs
        if endpoint_id is None and name in (spec.get("secrets") or {}).values()
    ]
    endpoints = session.execute(
        select(Endpoint.name, Endpoint.spec).where(Endpoint.workspace_id == workspace_id)
    )
    found += [
        f"endpoint '{ep}'" for ep, spec in endpoints if name in (spec.get("secrets") or {}).values()
    ]
    return sorted(found)


def check_references(session: Session, workspace: Workspace, secrets: Mapping[str, str]) -> None:
    """A 422 naming `secrets.ENV` for each secret the spec names that the workspace lacks."""
    if not secrets:
        return
    # On the connection: no autoflush of what a group commit has added so far (writes.py).
    known = set(
        session.connection()
        .execute(
            select(Secret.name).where(
                Secret.workspace_id == workspace.id, Secret.name.in_(set(secrets.values()))
            )
        )
        .scalars()
    )
    fields = [
        {
            "path": f"secrets.{env}",
            "message": f"secret '{name}' does not exist in workspace '{workspace.name}' "
            f"(create it with `corral secret set {name}`)",
        }
        for env, name in sorted(secrets.items())
        if name not in known
    ]
    if fields:
        summary = "; ".join(f"{f['path']}: {f['message']}" for f in fields)
        raise Invalid(f"invalid spec: {summary}", fields)


def secret_values(
    session: Session, box: SecretBox, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """(workspace id, name) -> the value, decrypted; a pair with no secret is left out."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    rows = session.execute(
        select(Secret.workspace_id, Secret.name, Secret.ciphertext).where(
            tuple_(Secret.workspace_id, Secret.name).in_(pairs)
        )
    )
    values: dict[tuple[str, str], str] = {}
    for ws, name, ciphertext in rows:
        try:
            values[(ws, name)] = box.decrypt(ciphertext)
        except SecretDecryptError as exc:
            # One unreadable value must not stop a node's whole desired set: it is left
            # out, as a deleted one is, and the operator is told why.
            log.error("secret '%s' of workspace %s: %s", name, ws, exc)
    return values


def _find(session: Session, workspace_id: str, name: str) -> Secret | None:
    return session.scalars(
        select(Secret).where(Secret.workspace_id == workspace_id, Secret.name == name)
    ).first()
