"""The workspace's SSH keys: users' public keys that may open sessions, and the host key
every session server presents (clients pin it; it never leaves the control plane but to
a node that starts a session, inside the agent's channel)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.server.errors import Conflict, Invalid, NotFound
from corral.server.secretbox import SecretBox
from corral.server.services.identity import new_id
from corral.server.store.tables import SshHostKey, SshKey, Workspace
from corral.spec.names import check_name
from corral.wire.pods import SshKeyAdd, SshKeyView

MAX_KEYS = 256  # per workspace: every session carries the list to its node


def parse_public_key(text: str) -> tuple[str, str]:
    """The key as one OpenSSH line and its SHA256 fingerprint; Invalid if it is not one."""
    import asyncssh  # only these routes need it

    line = text.strip()
    if "PRIVATE KEY" in line:
        message = "this is a private key; give the public one (the .pub file)"
        raise Invalid(message, [{"path": "public_key", "message": message}])
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError) as exc:
        message = f"not an OpenSSH public key ({exc}); expected a line like 'ssh-ed25519 AAAA…'"
        raise Invalid(message, [{"path": "public_key", "message": message}]) from None
    return key.export_public_key("openssh").decode().strip(), key.get_fingerprint("sha256")


def add_key(
    session: Session, workspace: Workspace, body: SshKeyAdd, who: str, now: float
) -> SshKeyView:
    try:
        name = check_name(body.name, "key name")
    except ValueError as exc:
        raise Invalid(str(exc), [{"path": "name", "message": str(exc)}]) from None
    line, fingerprint = parse_public_key(body.public_key)
    keys = list(session.scalars(select(SshKey).where(SshKey.workspace_id == workspace.id)))
    if len(keys) >= MAX_KEYS:
        raise Conflict(f"workspace '{workspace.name}' has {MAX_KEYS} keys; remove one first")
    for key in keys:
        if key.fingerprint == fingerprint:
            raise Conflict(f"this key is already registered as '{key.name}'")
    row = SshKey(
        id=new_id(),
        workspace_id=workspace.id,
        name=name,
        public_key=line,
        fingerprint=fingerprint,
        added_by=who,
        created_at=now,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a key named '{name}' exists; choose another --name") from None
    return key_view(row, workspace)


def key_view(row: SshKey, workspace: Workspace) -> SshKeyView:
    return SshKeyView(
        name=row.name,
        workspace=workspace.name,
        fingerprint=row.fingerprint,
        public_key=row.public_key,
        added_by=row.added_by,
        created_at=row.created_at,
    )


def list_keys(session: Session, workspace: Workspace) -> list[SshKeyView]:
    rows = session.scalars(
        select(SshKey).where(SshKey.workspace_id == workspace.id).order_by(SshKey.name)
    )
    return [key_view(r, workspace) for r in rows]


def delete_key(session: Session, workspace: Workspace, name: str) -> None:
    row = session.scalars(
        select(SshKey).where(SshKey.workspace_id == workspace.id, SshKey.name == name)
    ).first()
    if row is None:
        raise NotFound(f"no SSH key '{name}' in workspace '{workspace.name}'")
    session.delete(row)


def authorized_keys(session: Session, workspace_id: str) -> list[str]:
    return list(
        session.scalars(select(SshKey.public_key).where(SshKey.workspace_id == workspace_id))
    )


def host_key(session: Session, workspace_id: str, box: SecretBox, now: float) -> SshHostKey:
    """The workspace's host key, made on first use."""
    row = session.get(SshHostKey, workspace_id)
    if row is not None:
        return row
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    row = SshHostKey(
        workspace_id=workspace_id,
        private_key=box.encrypt(key.export_private_key("openssh").decode()),
        public_key=key.export_public_key("openssh").decode().strip(),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row
