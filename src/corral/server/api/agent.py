"""/v1/agent: node registration and the agent channel (one WebSocket per node, dialled out)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from corral.server.api.deps import CP, in_transaction, retry_stale
from corral.server.errors import Unauthorized
from corral.server.runtime import ControlPlane
from corral.server.services import health, node_ops
from corral.server.services import nodes as service
from corral.server.services.effects import Effects
from corral.server.services.join_tokens import consume_join_token
from corral.server.writes import Warm
from corral.timeouts import within
from corral.wire import agent as wire
from corral.wire.health import HealthReport
from corral.wire.sessions import SessionRefused

router = APIRouter(prefix="/v1/agent", tags=["agent"])
log = logging.getLogger("corral.server.agent")
HELLO_TIMEOUT_S = 15.0
T = TypeVar("T")


@router.post("/register")
def register(body: wire.RegisterRequest, cp: CP) -> wire.RegisterResponse:
    def run() -> wire.RegisterResponse:
        with cp.store.transaction() as session:
            # Raises JoinTokenRejected (401, saying why: unknown, expired, used up, revoked).
            consume_join_token(session, body.join_token, cp.clock.now())
            node, secret = service.register_node(session, body, cp.clock.now())
            return wire.RegisterResponse(node_id=node.id, node_token=secret)

    return retry_stale(run)


@router.post("/lifeline", status_code=204)
async def lifeline(request: Request) -> Response:
    """The node's lifeline (agent/lifeline.py) speaking while its agent is away: the host
    is alive, so a closed connection is an agent restarting. Node token only."""
    cp: ControlPlane = request.app.state.cp
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    node_id = cp.lifeline_tokens.get(token) if token else None
    if node_id is None and scheme.lower() == "bearer" and token:

        def lookup() -> str | None:
            with cp.store.read() as session:
                node = service.node_by_token(session, token)
                return node.id if node else None

        node_id = await asyncio.to_thread(lookup)
        if node_id is not None:
            cp.lifeline_tokens.put(token, node_id)
    if node_id is None:
        raise Unauthorized("unknown node token")
    cp.lifeline_at[node_id] = cp.clock.now()
    return Response(status_code=204)


@router.post("/interruption")
async def interruption(body: wire.InterruptionNotice, request: Request) -> wire.InterruptionAck:
    """The node's agent read a spot interruption notice: drain the node before the machine
    goes (services/node_ops.interrupted). Node token only; a repeated notice is a no-op."""
    cp: ControlPlane = request.app.state.cp
    scheme, _, token = request.headers.get("authorization", "").partition(" ")

    def run() -> tuple[Effects, str]:
        with cp.store.transaction() as session:
            node = service.node_by_token(session, token.strip())
            if node is None:
                raise Unauthorized("unknown node token")
            done = node_ops.interrupted(session, node.id, body.at, cp.clock.now())
            if done is None:
                return Effects(), f"node '{node.name}' was already told"
            return done

    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("unknown node token")
    effects, outcome = await asyncio.to_thread(retry_stale, run)
    cp.apply(effects)
    return wire.InterruptionAck(outcome=outcome)


async def _reject(ws: WebSocket, message: str) -> None:
    body = {"error": {"code": "unauthorized", "message": message, "fields": []}}
    try:
        await ws.send_denial_response(JSONResponse(body, status_code=401))
    except RuntimeError:  # the ASGI server cannot send HTTP denials: plain close (HTTP 403)
        await ws.close(code=1008, reason=message)


@router.websocket("/connect")
async def connect(ws: WebSocket) -> None:
    cp: ControlPlane = ws.app.state.cp
    scheme, _, token = ws.headers.get("authorization", "").partition(" ")

    def lookup() -> str | None:
        with cp.store.read() as session:
            node = service.node_by_token(session, token.strip())
            return node.id if node else None

    node_id = await asyncio.to_thread(lookup) if scheme.lower() == "bearer" else None
    if node_id is None:
        await _reject(ws, "unknown node token; register the agent again with a join token")
        return
    await ws.accept()
    try:
        await _serve(cp, ws, node_id)
    except WebSocketDisconnect:
        pass
    except RuntimeError as exc:  # starlette: the socket closed under a receive or a send
        log.info("node %s connection ended: %s", node_id, exc)
    finally:
        cp.hub.detach(node_id, ws.send_text)
        if node_id not in cp.hub.connected():  # not replaced by a newer connection
            cp.closed[node_id] = cp.clock.now()
        await asyncio.to_thread(_disconnect, cp, node_id)


def _disconnect(cp: ControlPlane, node_id: str) -> None:
    retry_stale(lambda: in_transaction(cp, lambda s: service.disconnect(s, node_id)))


async def _serve(cp: ControlPlane, ws: WebSocket, node_id: str) -> None:
    first = await within(ws.receive_text(), HELLO_TIMEOUT_S)
    hello = wire.AGENT_MESSAGE.validate_json(first)
    if not isinstance(hello, wire.Hello):
        await ws.close(code=1002, reason="expected hello first")
        return

    def on_hello() -> tuple[dict[str, int], Effects]:
        return retry_stale(
            lambda: in_transaction(cp, lambda s: service.connect(s, node_id, hello, cp.clock.now()))
        )

    offsets, effects = await asyncio.to_thread(on_hello)
    welcome = wire.Welcome(
        node_id=node_id, heartbeat_interval_s=cp.options.heartbeat_interval_s, log_offsets=offsets
    )
    await ws.send_text(welcome.model_dump_json())
    cp.hub.attach(node_id, ws.send_text, lambda: ws.close(code=1008, reason="node deleted"))
    cp.closed.pop(node_id, None)
    if hello.lifeline:
        cp.lifelines.add(node_id)
    else:
        cp.lifelines.discard(node_id)
    cp.apply(effects)
    log.info("node %s connected from %s", node_id, hello.address)
    # Messages are handled in order by a worker while this loop keeps reading: a reader
    # waiting on the database would leave the agent's pings unanswered and the connection
    # would be dropped under load.
    queue: asyncio.Queue[wire.AgentMessage] = asyncio.Queue()
    worker = asyncio.create_task(_work(cp, ws, node_id, queue), name=f"node-{node_id}")
    try:
        while True:
            text = await ws.receive_text()
            try:
                message = wire.AGENT_MESSAGE.validate_json(text)
            except ValidationError as exc:
                log.warning("node %s sent a message we cannot read: %s", node_id, exc)
                continue
            queue.put_nowait(message)
    finally:
        worker.cancel()


async def _work(
    cp: ControlPlane, ws: WebSocket, node_id: str, queue: asyncio.Queue[wire.AgentMessage]
) -> None:
    while True:
        message = await queue.get()
        # Any message shows the node alive. Heartbeats only do that: they are kept in memory
        # and written for all nodes at once by the liveness controller (one row write per
        # node per second would be most of a big fleet's database load).
        cp.heard[node_id] = cp.clock.now()
        if isinstance(message, wire.Heartbeat):
            continue
        try:
            effects = await _handle(cp, node_id, message)
        except Exception:
            # Drop the connection: the agent dials again and its hello re-reports everything.
            log.exception("node %s: handling a %s failed", node_id, type(message).__name__)
            with contextlib.suppress(Exception):
                await ws.close(code=1011, reason="server error; reconnect")
            return
        cp.apply(effects)


async def _handle(cp: ControlPlane, node_id: str, message: wire.AgentMessage) -> Effects:
    """Store one message; each node's messages in order, many nodes' in one transaction
    (server/writes.py)."""
    now = cp.clock.now()
    write: Callable[[Session], Effects]
    warm: tuple[Warm, str] | None = None
    if isinstance(message, wire.ReplicaReport):
        report = message
        warm = (service.warm_reports, report.replica_id)

        def write(s: Session) -> Effects:
            return service.replica_report(s, node_id, report, now)
    elif isinstance(message, wire.LogChunk):
        chunk = message

        def write(s: Session) -> Effects:
            service.append_log(s, node_id, chunk)
            return Effects()
    elif isinstance(message, HealthReport):
        checked = message

        def write(s: Session) -> Effects:
            return health.record_health(s, node_id, checked, now)
    elif isinstance(message, SessionRefused):
        cp.relays.refuse(message.session_id, message.reason)
        return Effects()
    elif isinstance(message, wire.Ports):
        ports = message

        def write(s: Session) -> Effects:
            service.record_ports(s, node_id, ports)
            return Effects()
    else:
        return Effects()
    for _ in range(4):  # a row changed under it (optimistic concurrency): read it again
        try:
            return await cp.writes.run(write, warm)
        except StaleDataError:
            continue
    return await cp.writes.run(write, warm)
