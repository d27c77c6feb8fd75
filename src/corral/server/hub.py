"""Connected agents, and sending each its desired set when it changes.

Anything may ask for a node to be synced (`sync`, thread-safe); one sender task per
connection coalesces requests, loads the desired set outside the event loop, and sends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from pydantic import BaseModel

from corral.server.secretbox import SecretBox
from corral.server.services.assignments import build_assignments
from corral.server.store.db import Store
from corral.wire.agent import Desired, ReplicaAssignment

log = logging.getLogger("corral.server.hub")
Send = Callable[[str], Awaitable[None]]


# Well under the agent's 64 MiB message limit (agent/channel.py), whatever a set holds.
PART_BYTES = 8 * 1024 * 1024
# A set up to this size goes whole, as before parts existed: an agent older than them
# would apply one part as the whole set and stop the replicas named in the others. Only
# a set near the 64 MiB limit, which such an agent could not take either, is split.
WHOLE_BYTES = 32 * 1024 * 1024


def split_desired(
    replicas: list[ReplicaAssignment],
    generation: int,
    limit: int = PART_BYTES,
    whole_limit: int = WHOLE_BYTES,
) -> list[str]:
    """The desired set as one message, or, past `whole_limit`, as parts of at most about
    `limit` bytes each (one replica is bounded by the spec limits, far below it)."""
    whole = Desired(replicas=replicas, generation=generation).model_dump_json()
    if len(whole) <= whole_limit:
        return [whole]
    groups: list[list[ReplicaAssignment]] = [[]]
    size = 0
    for assignment in replicas:
        n = len(assignment.model_dump_json())
        if groups[-1] and size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(assignment)
        size += n
    return [
        Desired(replicas=g, generation=generation, part=i, parts=len(groups)).model_dump_json()
        for i, g in enumerate(groups)
    ]


Close = Callable[[], Awaitable[None]]


class _Connection:
    def __init__(self, send: Send, close: Close | None = None) -> None:
        self.send = send
        self.close = close
        self.dirty = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class AgentHub:
    def __init__(
        self,
        store: Store,
        checkpoint_root: str | None = None,
        secrets: SecretBox | None = None,
        wheelhouse: bool = False,
    ) -> None:
        self._store = store
        # The server serves a package index: nodes build environments from it.
        self._wheelhouse = wheelhouse
        self._checkpoint_root = checkpoint_root
        # Opens workspace secrets for the replicas a desired set starts (assignments.py).
        self._secrets = secrets
        self._conns: dict[str, _Connection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def attach(self, node_id: str, send: Send, close: Close | None = None) -> None:
        old = self._conns.pop(node_id, None)
        if old and old.task:
            old.task.cancel()
        conn = _Connection(send, close)
        conn.task = asyncio.create_task(self._sender(node_id, conn), name=f"sync-{node_id}")
        self._conns[node_id] = conn
        conn.dirty.set()

    def detach(self, node_id: str, send: Send) -> None:
        conn = self._conns.get(node_id)
        # `==`: each `ws.send_text` is a new bound method; equal when of the same socket.
        if conn is not None and conn.send == send:
            del self._conns[node_id]
            if conn.task:
                conn.task.cancel()

    async def tell(self, node_id: str, message: BaseModel) -> bool:
        """Send one message to a connected node's agent; False when it is not connected
        (or the send failed: its connection's own loop notices a dead socket)."""
        conn = self._conns.get(node_id)
        if conn is None:
            return False
        try:
            await conn.send(message.model_dump_json())
        except Exception as exc:
            log.warning("could not send %s to node %s: %s", type(message).__name__, node_id, exc)
            return False
        return True

    async def hang_up(self, node_id: str) -> None:
        """Close a node's connection (it was deleted: its agent must not go on as it)."""
        conn = self._conns.get(node_id)
        if conn is not None and conn.close is not None:
            try:
                await conn.close()
            except Exception as exc:  # already closing: its own loop ends it
                log.info("closing node %s's connection: %s", node_id, exc)

    def connected(self) -> set[str]:
        return set(self._conns)

    def sync(self, node_ids: Iterable[str]) -> None:
        """Mark nodes dirty; callable from any thread."""
        ids = list(node_ids)
        if not ids or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._mark(ids)
        else:
            self._loop.call_soon_threadsafe(self._mark, ids)

    def _mark(self, ids: list[str]) -> None:
        for node_id in ids:
            conn = self._conns.get(node_id)
            if conn is not None:
                conn.dirty.set()

    async def _sender(self, node_id: str, conn: _Connection) -> None:
        while True:
            await conn.dirty.wait()
            conn.dirty.clear()
            try:
                desired = await asyncio.to_thread(self._desired, node_id)
                self._generation += 1
                for part in split_desired(desired.replicas, self._generation):
                    await conn.send(part)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection's own loop notices a dead socket
                log.warning("could not sync node %s: %s", node_id, exc)
                return

    def _desired(self, node_id: str) -> Desired:
        with self._store.read() as session:
            return Desired(
                replicas=build_assignments(
                    session,
                    node_id,
                    self._checkpoint_root,
                    secrets=self._secrets,
                    wheelhouse=self._wheelhouse,
                )
            )

    async def close(self) -> None:
        for conn in self._conns.values():
            if conn.task:
                conn.task.cancel()
        self._conns.clear()
