"""The session server: one SSH connection into one replica, over a dial-back WebSocket.

It runs inside the replica (enter.py put it there, as the replica's user), dials
`/v1/agent/relay/<session_id>` with its one-time ticket and serves SSH (asyncssh) over the
WebSocket's bytes: public keys of the workspace only, a PTY or plain shell, exec, the sftp
subsystem, and direct-tcpip to the replica's own loopback listeners (listeners.py).
Remote forwarding, agent forwarding and X11 are refused. When the SSH connection or the
WebSocket ends, the session's processes get SIGHUP, then SIGKILL after a short grace.

The SSH bytes go through a socketpair: asyncssh runs on one end as over TCP, a pump moves
the other end's bytes to and from the WebSocket in frames of at most RELAY_FRAME_BYTES.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable
from typing import Any, cast

import asyncssh
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from corral.agent.sessions.command import (
    Children,
    Command,
    _reap_every,
)
from corral.agent.sessions.config import SessionConfig
from corral.agent.sessions.listeners import Scope, target
from corral.loop import run_loop
from corral.wire.sessions import RELAY_FRAME_BYTES

# AES-GCM only: OpenSSH's client prefers chacha20-poly1305, which asyncssh computes in two
# passes per packet; AES-GCM is one call on AES-NI.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
REAP_EVERY_S = 1.0  # orphans of a session's processes, reaped this often
log = logging.getLogger("corral.session")

OPEN_TIMEOUT_S = 15.0
HANGUP_GRACE_S = 2.0
_SOCKET_BUFFER = 4 * 1024 * 1024


class _Server(asyncssh.SSHServer):
    def __init__(self, session: Session) -> None:
        self._session = session
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        return True  # any user name: the key is what counts

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        log.info("session %s: refused remote forwarding", self._session.config.session_id)
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        address, why = target(dest_host, dest_port, self._session.scope)
        if address is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, why)
        assert self._conn is not None
        return self._conn.forward_connection(address, dest_port)

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False


class _SFTP(asyncssh.SFTPServer):
    """asyncssh's SFTP server, relative paths from the session's working directory (not the
    server's: the same when enter.py started it, not in-process)."""

    def __init__(self, chan: Any, cwd: str) -> None:
        super().__init__(chan)
        self._cwd = os.fsencode(cwd)

    def map_path(self, path: bytes) -> bytes:
        return path if path.startswith(b"/") else os.path.join(self._cwd, path)

    def exit(self) -> None:
        # asyncssh closes an SFTP channel without an exit status; OpenSSH's scp (SFTP since
        # 9.0) then exits 1 though every byte arrived.
        self._chan.exit(0)


class Session:
    """One session: the dial-back, the SSH server on it, and its processes."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.scope = Scope(config.confined, config.shim_pid, config.pgid)
        self.children = Children()

    async def run(self) -> int:
        """Serve until the connection ends. 0, or 1 if the session could not start."""
        try:
            ws = await connect(
                self.config.relay_url,
                additional_headers={"Authorization": f"Bearer {self.config.ticket}"},
                open_timeout=OPEN_TIMEOUT_S,
                max_size=RELAY_FRAME_BYTES + 4096,
                compression=None,
                max_queue=64,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("session %s: cannot dial back: %s", self.config.session_id, exc)
            return 1
        ours, theirs = socket.socketpair()
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
            sock.setblocking(False)
        pump = asyncio.create_task(_pump(ws, theirs))
        try:
            await self._serve(ours, pump)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            await ws.close()
            theirs.close()
            await self._end_processes()
        return 0

    async def _serve(self, sock: socket.socket, pump: asyncio.Task[None]) -> None:
        try:
            keys = asyncssh.import_authorized_keys("\n".join(self.config.authorized_keys))
            host_key = asyncssh.import_private_key(self.config.host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            log.warning("session %s: bad keys from the server: %s", self.config.session_id, exc)
            return
        start = asyncio.ensure_future(
            asyncssh.run_server(
                sock,
                server_factory=lambda: _Server(self),
                server_host_keys=[host_key],
                authorized_client_keys=keys,
                session_factory=self._handle,
                sftp_factory=lambda chan: _SFTP(chan, self.config.cwd),
                allow_scp=True,
                encoding=None,
                line_editor=False,
                agent_forwarding=False,
                x11_forwarding=False,
                encryption_algs=CIPHERS,
                login_timeout=60,
            )
        )
        await asyncio.wait({start, pump}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            start.cancel()
            sock.close()
            return
        try:
            conn = start.result()
        except (asyncssh.Error, OSError, asyncio.CancelledError) as exc:
            log.info("session %s: no SSH session: %s", self.config.session_id, exc)
            sock.close()
            return
        closed = asyncio.ensure_future(conn.wait_closed())
        await asyncio.wait({closed, pump}, return_when=asyncio.FIRST_COMPLETED)
        conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.wait_closed(), 2)
        closed.cancel()

    async def _end_processes(self) -> None:
        self.children.hangup()
        deadline = time.monotonic() + HANGUP_GRACE_S
        while self.children.groups and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.children.kill()

    async def _handle(
        self,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> None:
        chan = stdin.channel
        try:
            await Command(self, chan, stdin, stdout, stderr).run()
        except OSError as exc:
            with contextlib.suppress(Exception):
                stderr.write(f"corral: cannot start: {exc.strerror or exc}\r\n".encode())
                cast(Any, chan).exit(127 if exc.errno == errno.ENOENT else 126)


async def _pump(ws: ClientConnection, sock: socket.socket) -> None:
    """Bytes both ways between the WebSocket and asyncssh's end of the socketpair; returns
    when either side ends."""
    loop = asyncio.get_running_loop()

    async def inbound() -> None:
        async for message in ws:
            if isinstance(message, str):
                log.warning("relay sent a text message: closing")
                return
            await loop.sock_sendall(sock, message)

    async def outbound() -> None:
        while True:
            data = await loop.sock_recv(sock, RELAY_FRAME_BYTES)
            if not data:
                return
            await ws.send(data)

    tasks = [asyncio.ensure_future(inbound()), asyncio.ensure_future(outbound())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def serve(config: SessionConfig) -> Awaitable[int]:
    return Session(config).run()


def main(config: SessionConfig) -> int:
    """The session server's process: log problems to stderr (the agent's log), serve."""
    logging.basicConfig(
        level=logging.WARNING, format=f"session {config.session_id}: %(name)s: %(message)s"
    )
    logging.getLogger("asyncssh").setLevel(logging.ERROR)

    async def run() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        session = Session(config)
        # Polled, not on SIGCHLD: uvloop keeps that signal for its own children.
        reaper = asyncio.create_task(_reap_every(REAP_EVERY_S, session.children.groups))
        try:
            return await session.run()
        except asyncio.CancelledError:
            await session._end_processes()
            return 0
        finally:
            reaper.cancel()

    return run_loop(run())
