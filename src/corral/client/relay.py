"""The client end of a session relay: a WebSocket to the control plane that carries raw SSH
bytes to a pod's (or a job replica's) session server.

`pump_stdio` is `corral pod proxy`, OpenSSH's ProxyCommand: a data path, so it reads and
writes 256 KiB at a time through asyncio pipes and does no work per byte. `connect_ssh` runs
asyncssh's client over the same relay (through a socketpair) for `pod exec` and `forward`,
which need no OpenSSH.

Only the standard library and websockets at import time: the proxy starts on every `ssh`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import stat
from collections import deque
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    import asyncssh
    from websockets.asyncio.client import ClientConnection

# The relay's frames carry at most this many bytes (corral.wire.sessions.RELAY_FRAME_BYTES,
# not imported: that module pulls pydantic into the proxy's start).
FRAME_BYTES = 256 * 1024
F_SETPIPE_SZ: int | None = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
PIPE_BYTES = 1024 * 1024
# Bytes read ahead of the WebSocket before reading pauses.
_READ_AHEAD = 4 * FRAME_BYTES
# What the close codes of the relay mean (corral.wire.sessions).
_CLOSE_TEXT = {
    4404: "not running",
    4403: "refused",
    4503: "the node did not answer",
}

RelayKind = Literal["pod", "job"]


class RelayError(Exception):
    """The relay could not open, or ended with an error: one line for the user."""


def relay_path(workspace: str, kind: RelayKind, name: str, replica: int | None = None) -> str:
    base = f"/v1/workspaces/{quote(workspace, safe='')}/{kind}s/{quote(name, safe='')}/relay"
    if kind == "job":
        return f"{base}?replica={replica or 0}"
    return base


async def open_relay(url: str, token: str | None) -> ClientConnection:
    """The relay WebSocket, open; a RelayError carrying the server's own message when it
    refuses (401/403/404/409) or cannot be reached."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return await connect(
            url,
            additional_headers=headers,
            compression=None,  # SSH bytes are encrypted: deflate would only cost CPU
            max_size=4 * FRAME_BYTES,
            write_limit=2 * FRAME_BYTES,
            open_timeout=30,
            close_timeout=3,
            user_agent_header="corral-relay",
        )
    except InvalidStatus as exc:
        raise RelayError(_refusal(exc.response.status_code, exc.response.body)) from None
    except InvalidURI as exc:
        raise RelayError(f"{url} is not a valid server URL: {exc}") from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        where = urlsplit(url).netloc
        raise RelayError(
            f"cannot reach the server at {where}: {exc or type(exc).__name__}"
        ) from None


def _refusal(status: int, body: bytes | bytearray | None) -> str:
    message = ""
    try:
        data = json.loads(body or b"")
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
        elif isinstance(data, dict) and isinstance(data.get("detail"), str):
            message = data["detail"]
    except ValueError:
        message = (body or b"").decode("utf-8", "replace").strip()[:300]
    return f"HTTP {status}: {message}" if message else f"the server refused: HTTP {status}"


def close_problem(code: int | None, reason: str) -> str | None:
    """The one line a relay's close means, or None when it closed normally."""
    if code is None or code in (1000, 1001):
        return None
    what = reason or _CLOSE_TEXT.get(code, f"closed with code {code}")
    return f"the session ended: {what}"


# -- the proxy: stdin/stdout <-> the WebSocket ----------------------------------------------


class _PipeSource(asyncio.Protocol):
    """Chunks read from a pipe or socket by asyncio (up to 256 KiB each), paused while
    too much waits for the WebSocket."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.ready = asyncio.Event()
        self.transport: asyncio.ReadTransport | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        self.ready.set()
        if self.buffered > _READ_AHEAD and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def eof_received(self) -> bool | None:
        self.eof = True
        self.ready.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.ready.set()

    async def read(self) -> bytes:
        while not self.chunks:
            if self.eof:
                return b""
            self.ready.clear()
            await self.ready.wait()
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.paused and self.buffered <= _READ_AHEAD // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data


def _pollable(fd: int) -> bool:
    """Pipes, sockets and terminals; not files, nor devices like /dev/null (epoll refuses
    them), which are read and written in a thread instead."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))


def _grow_pipe(fd: int) -> None:
    """A pipe holds 64 KiB by default, so each read and each frame carried about 54 KiB:
    four times the reads, frames and wake-ups of full 256 KiB frames, on every hop."""
    if F_SETPIPE_SZ is not None and stat.S_ISFIFO(os.fstat(fd).st_mode):
        with contextlib.suppress(OSError):  # over /proc/sys/fs/pipe-max-size: keep it
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)


async def _reader(fd: int) -> Any:
    """Something with `async read() -> bytes` (b"" at the end) over `fd`."""
    loop = asyncio.get_running_loop()
    _grow_pipe(fd)
    if _pollable(fd):
        source = _PipeSource()
        # closefd=False: fd 0 stays ours to close.
        await loop.connect_read_pipe(lambda: source, os.fdopen(fd, "rb", 0, closefd=False))
        return source
    return _FileIO(fd)


class _FileIO:
    """A regular file (stdin redirected from one): read in a thread, it never 'blocks'."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def read(self, size: int = FRAME_BYTES) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(None, os.read, self.fd, size)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = await asyncio.get_running_loop().run_in_executor(None, os.write, self.fd, view)
            view = view[n:]

    async def close(self) -> None:
        """The fd stays open: it is this process's."""


class _PipeSink:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


async def _writer(fd: int) -> Any:
    loop = asyncio.get_running_loop()
    _grow_pipe(fd)
    if _pollable(fd):
        pipe = os.fdopen(fd, "wb", 0, closefd=False)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
        transport.set_write_buffer_limits(high=2 * FRAME_BYTES)
        return _PipeSink(asyncio.StreamWriter(transport, protocol, None, loop))
    return _FileIO(fd)


async def pump(ws: ClientConnection, source: Any, sink: Any) -> str | None:
    """Bytes both ways until either side ends; the problem to report, or None.

    The local side ending (ssh closed our stdin) ends the session well: the WebSocket is
    closed while what still arrives is drained, so the closing handshake completes."""
    from websockets.exceptions import ConnectionClosed

    async def upstream() -> None:
        while data := await source.read():
            # Frames stay within the relay's limit whatever size a read returned.
            for start in range(0, len(data), FRAME_BYTES):
                await ws.send(data[start : start + FRAME_BYTES])

    async def downstream() -> None:
        async for message in ws:
            await sink.write(message if isinstance(message, bytes) else message.encode())

    up = asyncio.create_task(upstream())
    down = asyncio.create_task(downstream())
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        ours = up in done and not up.cancelled() and up.exception() is None
        if ours:
            await ws.close()
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
    if ours:
        return None
    problem: str | None = None
    for task in done:
        exc = task.exception()
        if isinstance(exc, OSError):
            problem = f"the local side failed: {exc.strerror or exc}"
        elif exc is not None and not isinstance(exc, ConnectionClosed):
            raise exc
    await ws.close()
    if problem is None:
        problem = close_problem(ws.close_code, ws.close_reason or "")
    return problem


async def proxy(url: str, token: str | None, in_fd: int = 0, out_fd: int = 1) -> str | None:
    """`corral pod proxy`: `in_fd`/`out_fd` <-> the relay. Returns the problem, or None."""
    ws = await open_relay(url, token)
    source = await _reader(in_fd)
    sink = await _writer(out_fd)
    return await pump(ws, source, sink)


# -- asyncssh over the relay ------------------------------------------------------------------


async def _bridge(ws: ClientConnection, sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock, limit=2 * FRAME_BYTES)

    class _Reader:
        async def read(self) -> bytes:
            return await reader.read(FRAME_BYTES)

    try:
        await pump(ws, _Reader(), _PipeSink(writer))
    finally:
        writer.close()


async def connect_ssh(
    url: str,
    token: str | None,
    key_path: str,
    host_key: str,
) -> tuple[asyncssh.SSHClientConnection, asyncio.Task[None]]:
    """An asyncssh client connection through the relay at `url`: authenticated with the key
    at `key_path`, trusting the host key `host_key` (an OpenSSH public key line) only.
    Returns the connection and the task that carries its bytes (it ends with it)."""
    import asyncssh

    ws = await open_relay(url, token)
    mine, theirs = socket.socketpair()
    bridge = asyncio.create_task(_bridge(ws, theirs))
    try:
        conn = await asyncssh.connect(
            "corral-relay",  # a socketpair has no peer name for asyncssh to take
            sock=mine,
            username="corral",
            client_keys=[key_path],
            known_hosts=([asyncssh.import_public_key(host_key)], [], []),
            agent_path=None,
            config=None,
            connect_timeout=60,
        )
    except (asyncssh.Error, OSError) as exc:
        bridge.cancel()
        raise RelayError(f"ssh over the relay failed: {exc}") from None
    return conn, bridge


def _redirect(fd: int) -> Any:
    """`fd` as asyncssh takes it: dup'ed (asyncssh closes what it is given), or, for what
    epoll refuses (/dev/null), read and written in a thread."""
    if _pollable(fd) or stat.S_ISREG(os.fstat(fd).st_mode):
        return os.dup(fd)
    return _FileIO(fd)


async def exec_command(
    url: str, token: str | None, key_path: str, host_key: str, command: str
) -> int:
    """Run `command` over the relay with this process's stdin/stdout/stderr (a PTY when stdin
    is a terminal); its exit status (128 + the signal when a signal ended it)."""
    import signal
    import sys

    conn, bridge = await connect_ssh(url, token, key_path, host_key)
    tty = sys.stdin.isatty()
    restore = None
    try:
        options: dict[str, Any] = {}
        if tty:
            import termios
            import tty as ttymod

            size = os.get_terminal_size(0)
            options = {
                "term_type": os.environ.get("TERM", "xterm-256color"),
                "term_size": (size.columns, size.lines),
            }
            restore = termios.tcgetattr(0)
            ttymod.setraw(0)
        process = await conn.create_process(
            command,
            stdin=_redirect(0),
            stdout=_redirect(1),
            stderr=_redirect(1 if tty else 2),
            encoding=None,
            **options,
        )
        if tty:

            def resized() -> None:
                size = os.get_terminal_size(0)
                process.change_terminal_size(size.columns, size.lines)

            asyncio.get_running_loop().add_signal_handler(signal.SIGWINCH, resized)
        result = await process.wait(check=False)
    finally:
        if restore is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, restore)
        conn.close()
        await asyncio.gather(bridge, return_exceptions=True)
    if result.exit_status is not None and result.exit_status >= 0:
        return result.exit_status
    if result.exit_signal:
        number = getattr(signal, f"SIG{result.exit_signal[0]}", None)
        return 128 + int(number) if number is not None else 255
    return 255


async def forward(
    url: str,
    token: str | None,
    key_path: str,
    host_key: str,
    local_port: int,
    remote_port: int,
    ready: Any,
) -> None:
    """127.0.0.1:`local_port` -> the replica's localhost:`remote_port`, until cancelled or
    the session ends. `ready(port)` is called once listening (port: the bound one)."""
    conn, bridge = await connect_ssh(url, token, key_path, host_key)
    try:
        listener = await conn.forward_local_port("127.0.0.1", local_port, "localhost", remote_port)
        ready(listener.get_port())
        await conn.wait_closed()
    finally:
        conn.close()
        await asyncio.gather(bridge, return_exceptions=True)
    raise RelayError("the session ended")
