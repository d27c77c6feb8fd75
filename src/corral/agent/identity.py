"""The node's identity: registering with a join token once, and `<state_dir>/node.json`."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from corral.agent.errors import FatalError, RetryLater
from corral.agent.layout import read_json
from corral.wire.agent import RegisterRequest, RegisterResponse

log = logging.getLogger("corral.agent")
NODE_FILE = "node.json"
REGISTER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class NodeIdentity:
    server: str
    node_id: str
    node_token: str

    def __repr__(self) -> str:
        return f"NodeIdentity(server={self.server!r}, node_id={self.node_id!r})"


def _same_server(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def load_identity(state_dir: Path, server: str) -> NodeIdentity | None:
    """The saved identity for `server`, or None (none saved, another server, or unreadable)."""
    path = state_dir / NODE_FILE
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s)", path, exc)
        return None
    if data is None:
        return None
    try:
        identity = NodeIdentity(
            server=str(data["server"]),
            node_id=str(data["node_id"]),
            node_token=str(data["node_token"]),
        )
    except KeyError as exc:
        log.warning("ignoring %s: it has no %s", path, exc)
        return None
    if not _same_server(identity.server, server):
        log.info("%s belongs to server %s, not %s", path, identity.server, server)
        return None
    return identity


def saved_node_token(state_dir: Path) -> str | None:
    """The node token in node.json whatever server it names: presented when registering
    again, it lets the server re-key this node's name (and only the node holding it)."""
    try:
        data = read_json(state_dir / NODE_FILE)
    except (OSError, ValueError):
        return None
    token = data.get("node_token") if data else None
    return token if isinstance(token, str) and token else None


def save_identity(state_dir: Path, identity: NodeIdentity) -> None:
    path = state_dir / NODE_FILE
    tmp = path.with_name(f".{NODE_FILE}.tmp")
    # Created 0600 from the start: the node token must never be readable by others.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(
            {
                "server": identity.server,
                "node_id": identity.node_id,
                "node_token": identity.node_token,
            },
            out,
        )
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def register(server: str, request: RegisterRequest) -> NodeIdentity:
    """POST /v1/agent/register once. Raises FatalError (rejected) or RetryLater."""
    url = server.rstrip("/") + "/v1/agent/register"
    try:
        async with httpx.AsyncClient(timeout=REGISTER_TIMEOUT_S) as client:
            response = await client.post(url, json=request.model_dump(mode="json"))
    except httpx.HTTPError as exc:
        raise RetryLater(f"cannot reach {server} ({_describe(exc)})") from exc
    if response.status_code == 401:
        # The server says which: unknown, expired, used up or revoked.
        raise FatalError(f"join token rejected by {server}: {_error_message(response)}")
    if response.status_code == 429:
        wait = response.headers.get("retry-after", "a while")
        raise RetryLater(f"{server} is refusing this address for {wait} s after failed logins")
    if response.status_code >= 500:
        raise RetryLater(f"{server} answered {response.status_code} to registration")
    if response.status_code != 200:
        raise FatalError(f"{server} refused to register this node: {_error_message(response)}")
    try:
        body = RegisterResponse.model_validate_json(response.content)
    except ValidationError as exc:
        raise FatalError(f"{server} sent a registration answer we cannot read: {exc}") from exc
    return NodeIdentity(server=server, node_id=body.node_id, node_token=body.node_token)


def _error_message(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code} {response.text[:200]}"
    return f"HTTP {response.status_code}: {message}"


def _describe(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
