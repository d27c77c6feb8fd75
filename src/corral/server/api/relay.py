"""Sessions into pods and job replicas: the user's WebSocket and the node's dial-back.

WS /v1/workspaces/{ws}/pods/{name}/relay            user's side (member role)
WS /v1/workspaces/{ws}/jobs/{name}/relay?replica=N  user's side (member role)
WS /v1/agent/relay/{session_id}                     the node's session server
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import cast

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from corral.server.api import deps
from corral.server.api.deps import in_transaction
from corral.server.api.errors import ApiError, domain_status
from corral.server.auth import Principal, check_workspace_access
from corral.server.errors import DomainError
from corral.server.relay import DIAL_BACK_S, Receive, Send, SessionRefusedError, Traffic, pump
from corral.server.runtime import ControlPlane
from corral.server.services import sessions as service
from corral.wire.sessions import (
    CLOSE_NOT_RUNNING,
    CLOSE_UNAVAILABLE,
    RELAY_FRAME_BYTES,
    OpenSession,
)

router = APIRouter(tags=["sessions"])
log = logging.getLogger("corral.server.relay")


async def _deny(ws: WebSocket, status: int, code: str, message: str) -> None:
    body = {"error": {"code": code, "message": message, "fields": []}}
    try:
        await ws.send_denial_response(JSONResponse(body, status_code=status))
    except RuntimeError:  # the ASGI server cannot send HTTP denials: a plain close
        await ws.close(code=1008, reason=message[:120])


def _origin(ws: WebSocket) -> str:
    return f"{ws.client.host}:{ws.client.port}" if ws.client else "unknown"


@router.websocket("/v1/workspaces/{workspace}/pods/{name}/relay")
async def pod_relay(ws: WebSocket, workspace: str, name: str) -> None:
    await _user_side(ws, workspace, "pod", name, 0)


@router.websocket("/v1/workspaces/{workspace}/jobs/{name}/relay")
async def job_relay(ws: WebSocket, workspace: str, name: str, replica: int = 0) -> None:
    await _user_side(ws, workspace, "job", name, replica)


async def _user_side(ws: WebSocket, workspace: str, kind: str, name: str, rank: int) -> None:
    cp: ControlPlane = ws.app.state.cp
    try:
        # The same checks as every REST call: a token of the workspace, with a write role
        # (a viewer may list pods, not enter them).
        principal: Principal = await deps._principal(cast(Request, ws), cp)
        check_workspace_access(principal, workspace, "member")
        if rank < 0 or rank > 4096:
            raise ApiError(422, "invalid", "replica: expected a number from 0")
        box = ws.app.state.secret_box
        target = await asyncio.to_thread(
            in_transaction,
            cp,
            service.find_target,
            box,
            workspace,
            kind,
            name,
            rank,
            cp.clock.now(),
        )
    except ApiError as exc:
        await _deny(ws, exc.status, exc.code, exc.message)
        return
    except DomainError as exc:
        await _deny(ws, domain_status(exc), exc.code, exc.message)
        return
    full = cp.relays.full(workspace)
    if full is not None:
        await _deny(ws, 429, "busy", full)
        return
    session_id = str(uuid.uuid4())
    pending, ticket = cp.relays.open(session_id, workspace)
    try:
        await ws.accept()
        message = OpenSession(
            session_id=session_id,
            ticket=ticket,
            replica_id=target.replica_id,
            authorized_keys=target.authorized_keys,
            host_key=target.host_key,
            who=principal.token_name,
        )
        if not await cp.hub.tell(target.node_id, message):
            await ws.close(CLOSE_UNAVAILABLE, f"node {target.node} is not connected")
            return
        try:
            node = await asyncio.wait_for(asyncio.shield(pending.joined), DIAL_BACK_S)
        except SessionRefusedError as exc:
            await ws.close(CLOSE_NOT_RUNNING, str(exc)[:120])
            return
        except TimeoutError:
            await ws.close(CLOSE_UNAVAILABLE, f"node {target.node} did not answer in time")
            return
        await _joined(cp, ws, target, principal, node)
    except WebSocketDisconnect:
        pass
    finally:
        cp.relays.close(session_id)


async def _joined(
    cp: ControlPlane,
    ws: WebSocket,
    target: service.Target,
    principal: Principal,
    node: tuple[Receive, Send],
) -> None:
    now = cp.clock.now()
    event_id = None
    if target.pod_id is not None:
        event_id = await asyncio.to_thread(
            in_transaction,
            cp,
            service.session_opened,
            target.pod_id,
            principal.token_name,
            _origin(ws),
            now,
        )
    traffic = Traffic()
    try:
        await pump((_receiver(ws), ws.send_bytes), node, traffic)
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
        if event_id is not None:
            nbytes = traffic.up + traffic.down
            effects = await asyncio.to_thread(
                in_transaction, cp, service.session_closed, event_id, cp.clock.now(), nbytes
            )
            cp.apply(effects)
        log.info(
            "session %s/%s by %s: %d bytes up, %d down",
            target.kind,
            target.name,
            principal.token_name,
            traffic.up,
            traffic.down,
        )


def _receiver(ws: WebSocket) -> Receive:
    async def receive() -> bytes | None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            data = message.get("bytes")
            if data is None:  # a text frame: not SSH bytes
                continue
            if len(data) > RELAY_FRAME_BYTES * 2:
                return None
            return cast(bytes, data)

    return receive


@router.websocket("/v1/agent/relay/{session_id}")
async def node_side(ws: WebSocket, session_id: str) -> None:
    cp: ControlPlane = ws.app.state.cp
    scheme, _, ticket = ws.headers.get("authorization", "").partition(" ")
    pending = cp.relays.claim(session_id, ticket.strip()) if scheme.lower() == "bearer" else None
    if pending is None:
        await _deny(ws, 401, "unauthorized", "unknown session or ticket")
        return
    if pending.joined.done():  # the user's side gave up meanwhile
        await _deny(ws, 410, "gone", "the session ended before the node dialled back")
        return
    await ws.accept()
    pending.joined.set_result((_receiver(ws), ws.send_bytes))
    try:
        await pending.done.wait()
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
