"""Sessions into pods and replicas: the user's WebSocket joined to the node's dial-back.

A session is opened by the client's side (api/relay.py): it is registered here with a
one-time ticket, the node's agent is told to dial back, and the dial-back (with the
ticket) is handed to the waiting side, which then pumps bytes both ways until either
closes. Each session has a connection of its own from the node: a 10 GB copy shares
nothing with the agent's channel (heartbeats, reports) but this process's event loop,
and each pump waits for its send to be taken before it reads more (flow control: a slow
receiver slows the sender rather than filling this process's memory).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from corral.server.auth import hash_token

# Bounds: sessions open at once per workspace and on this server, and the time a node has
# to dial back.
MAX_PER_WORKSPACE = 64
MAX_SESSIONS = 1024
DIAL_BACK_S = 15.0

Receive = Callable[[], Awaitable[bytes | None]]  # None: the other side closed
Send = Callable[[bytes], Awaitable[None]]


@dataclass
class Pending:
    session_id: str
    workspace: str
    ticket_hash: str
    # Set by the dial-back: its receive and send, and an event to set when the pump is done.
    joined: asyncio.Future[tuple[Receive, Send]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RelayBoard:
    def __init__(self) -> None:
        self._sessions: dict[str, Pending] = {}

    def count(self, workspace: str | None = None) -> int:
        if workspace is None:
            return len(self._sessions)
        return sum(1 for p in self._sessions.values() if p.workspace == workspace)

    def full(self, workspace: str) -> str | None:
        """Why no session may open now, or None."""
        if len(self._sessions) >= MAX_SESSIONS:
            return f"this server relays {MAX_SESSIONS} sessions already; try again later"
        if self.count(workspace) >= MAX_PER_WORKSPACE:
            return f"workspace '{workspace}' has {MAX_PER_WORKSPACE} sessions open; close one first"
        return None

    def open(self, session_id: str, workspace: str) -> tuple[Pending, str]:
        """Register a session; returns it and the ticket its node must present."""
        ticket = "crt_" + secrets.token_urlsafe(32)
        pending = Pending(session_id, workspace, hash_token(ticket))
        self._sessions[session_id] = pending
        return pending, ticket

    def claim(self, session_id: str, ticket: str) -> Pending | None:
        """The session a dial-back with `ticket` joins (once), or None."""
        pending = self._sessions.get(session_id)
        if pending is None or pending.joined.done():
            return None
        if not hmac.compare_digest(pending.ticket_hash, hash_token(ticket)):
            return None
        return pending

    def refuse(self, session_id: str, reason: str) -> None:
        pending = self._sessions.get(session_id)
        if pending is not None and not pending.joined.done():
            pending.joined.set_exception(SessionRefusedError(reason))

    def close(self, session_id: str) -> None:
        pending = self._sessions.pop(session_id, None)
        if pending is not None:
            pending.done.set()
            if not pending.joined.done():
                pending.joined.cancel()


class SessionRefusedError(Exception):
    pass


@dataclass
class Traffic:
    up: int = 0  # client -> node
    down: int = 0


async def pump(client: tuple[Receive, Send], node: tuple[Receive, Send], traffic: Traffic) -> None:
    """Copy both ways until either side closes; then stop both directions."""

    async def copy(src: Receive, dst: Send, up: bool) -> None:
        while True:
            data = await src()
            if data is None:
                return
            if up:
                traffic.up += len(data)
            else:
                traffic.down += len(data)
            await dst(data)

    tasks = [
        asyncio.create_task(copy(client[0], node[1], True)),
        asyncio.create_task(copy(node[0], client[1], False)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
