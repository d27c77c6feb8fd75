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
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import asyncssh
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from corral.agent import procs
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
READ_CHUNK = 256 * 1024
_SOCKET_BUFFER = 4 * 1024 * 1024
# Variables a client may send (`SendEnv`), as most distributions' sshd accepts.
_CLIENT_ENV = ("LANG", "LC_", "TERM", "COLORTERM")


@dataclass
class SessionConfig:
    """What the launcher hands a session server, on its stdin only (it holds the ticket and
    the host key)."""

    session_id: str
    ticket: str
    relay_url: str
    authorized_keys: list[str]
    host_key: str
    env: dict[str, str]
    cwd: str
    who: str = ""
    confined: bool = False
    # Unconfined: the replica's shim and workload group (whose listeners a session reaches).
    shim_pid: int | None = None
    pgid: int | None = None
    # Confined: the replica's init (PID 1 of its namespace) to enter, and whom to become.
    init_pid: int | None = None
    init_start_time: int | None = None
    uid: int | None = None
    gid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SessionConfig:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("session config: expected a JSON object")
        return cls(**data)


def relay_url(server: str, session_id: str) -> str:
    """The dial-back URL of a session, from the control plane's http(s) URL."""
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + f"/v1/agent/relay/{session_id}"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def login_shell(env: dict[str, str]) -> str:
    shell = env.get("SHELL")
    if shell and os.path.isabs(shell) and os.access(shell, os.X_OK):
        return shell
    return "/bin/bash" if os.access("/bin/bash", os.X_OK) else "/bin/sh"


class Children:
    """The session's processes: each in a session of its own, waited for by pidfd."""

    def __init__(self) -> None:
        self.groups: set[int] = set()  # pids, and process groups: each is its group's leader

    async def wait(self, pid: int) -> int:
        """The child's wait status, once it has exited."""
        loop = asyncio.get_running_loop()
        fd = os.pidfd_open(pid)
        done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _settle, done)
        try:
            await done
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        self.groups.discard(pid)
        return status

    def hangup(self) -> None:
        for pgid in list(self.groups):
            _killpg(pgid, signal.SIGHUP)

    def kill(self) -> None:
        for pgid in list(self.groups):
            _killpg(pgid, signal.SIGKILL)
        # Whatever left its group (setsid, a double fork) is still below this process while
        # it is a subreaper (enter.py): found by parentage.
        me = os.getpid()
        for pid in procs.replica_pids(procs.table(), me, None) - {me}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


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


class Command:
    """A shell or a command of one SSH channel, with or without a PTY."""

    def __init__(
        self,
        session: Session,
        chan: Any,
        stdin: asyncssh.SSHReader[bytes],
        stdout: asyncssh.SSHWriter[bytes],
        stderr: asyncssh.SSHWriter[bytes],
    ) -> None:
        self.session, self.chan = session, chan
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr

    def _environment(self) -> dict[str, str]:
        env = dict(self.session.config.env)
        for key, value in (self.chan.get_environment() or {}).items():
            if isinstance(key, str) and isinstance(value, str) and key.startswith(_CLIENT_ENV):
                env[key] = value
        term = self.chan.get_terminal_type()
        if term:
            env["TERM"] = term
        env.setdefault("SHELL", login_shell(env))
        return env

    async def run(self) -> None:
        env = self._environment()
        shell = login_shell(env)
        command = self.chan.get_command()
        if command is None:
            argv = ["-" + os.path.basename(shell)]  # a login shell, as sshd starts it
        else:
            argv = [os.path.basename(shell), "-c", command]
        cwd = self.session.config.cwd
        if not os.path.isdir(cwd):
            cwd = env.get("HOME", "/")
        tty = self.chan.get_terminal_type() is not None
        if tty:
            await self._run_pty(shell, argv, env, cwd)
        else:
            await self._run_pipes(shell, argv, env, cwd)

    async def _run_pty(self, shell: str, argv: list[str], env: dict[str, str], cwd: str) -> None:
        master, slave = os.openpty()
        width, height, pixw, pixh = self.chan.get_terminal_size()
        _set_size(master, width, height, pixw, pixh)
        modes = self.chan.get_terminal_modes()
        _apply_modes(slave, modes)
        try:
            proc = subprocess.Popen(
                argv,
                executable=shell,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_take_tty,
            )
        finally:
            os.close(slave)
        self.session.children.groups.add(proc.pid)
        os.set_blocking(master, False)
        waiter = asyncio.ensure_future(self.session.children.wait(proc.pid))
        out = asyncio.ensure_future(_fd_to_channel(master, self.stdout, eio_is_eof=True))
        feed = asyncio.ensure_future(self._feed(master, proc.pid, master))
        try:
            status = await waiter
            # What the shell wrote before it exited; a background job holding the terminal
            # must not keep the channel open.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(out), 0.2)
        finally:
            out.cancel()
            feed.cancel()
            os.close(master)
            _killpg(proc.pid, signal.SIGHUP)
        self._exit(status)

    async def _run_pipes(self, shell: str, argv: list[str], env: dict[str, str], cwd: str) -> None:
        proc = subprocess.Popen(
            argv,
            executable=shell,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.session.children.groups.add(proc.pid)
        assert proc.stdin and proc.stdout and proc.stderr
        fds = [proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()]
        for fd in fds:
            os.set_blocking(fd, False)
        waiter = asyncio.ensure_future(self.session.children.wait(proc.pid))
        out = asyncio.ensure_future(_fd_to_channel(fds[1], self.stdout))
        err = asyncio.ensure_future(_fd_to_channel(fds[2], self.stderr))
        feed = asyncio.ensure_future(self._feed(fds[0], proc.pid, None, close=proc.stdin))
        try:
            status = await waiter
            await asyncio.gather(out, err, return_exceptions=True)
        finally:
            for task in (out, err, feed):
                task.cancel()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    pipe.close()
        self._exit(status)

    async def _feed(self, fd: int, pgid: int, master: int | None, close: Any = None) -> None:
        """The client's input to the process, and its window changes and signals."""
        while True:
            try:
                data = await self.stdin.read(READ_CHUNK)
            except asyncssh.TerminalSizeChanged as change:
                if master is not None:
                    _set_size(
                        master, change.width, change.height, change.pixwidth, change.pixheight
                    )
                continue
            except asyncssh.SignalReceived as sig:
                signum = getattr(signal, f"SIG{sig.signal}", None)
                if isinstance(signum, signal.Signals):
                    _killpg(pgid, signum)
                continue
            except asyncssh.BreakReceived:
                if master is not None:
                    with contextlib.suppress(OSError):
                        termios.tcsendbreak(master, 0)
                continue
            except (asyncssh.Error, OSError):
                data = b""
            if not data:
                if close is not None:
                    with contextlib.suppress(OSError):
                        close.close()
                elif master is not None:
                    # EOF on a terminal: the line discipline's ^D.
                    with contextlib.suppress(OSError):
                        await _write_fd(fd, b"\x04")
                return
            try:
                await _write_fd(fd, data)
            except OSError:
                return

    def _exit(self, status: int) -> None:
        with contextlib.suppress(Exception):
            if os.WIFSIGNALED(status):
                signum = os.WTERMSIG(status)
                name = signal.Signals(signum).name.removeprefix("SIG")
                self.chan.exit_with_signal(name, os.WCOREDUMP(status), "", "")
            else:
                self.chan.exit(os.waitstatus_to_exitcode(status))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _take_tty() -> None:
    # In the child, after setsid: the PTY's slave (fd 0) becomes its controlling terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_size(fd: int, width: int, height: int, pixw: int, pixh: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixw, pixh))


def _apply_modes(fd: int, modes: dict[int, int]) -> None:
    if not modes:
        return
    with contextlib.suppress(OSError, termios.error):
        attrs = termios.tcgetattr(fd)
        ospeed = modes.get(asyncssh.PTY_OP_OSPEED)
        ispeed = modes.get(asyncssh.PTY_OP_ISPEED)
        if ispeed:
            attrs[4] = ispeed
        if ospeed:
            attrs[5] = ospeed
        termios.tcsetattr(fd, termios.TCSANOW, attrs)


async def _wait_fd(fd: int, add: Callable[..., None], remove: Callable[[int], Any]) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    add(fd, _settle, ready)
    try:
        await ready
    finally:
        remove(fd)


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _wait_fd(fd, loop.add_writer, loop.remove_writer)
            continue
        view = view[n:]


async def _fd_to_channel(
    fd: int, writer: asyncssh.SSHWriter[bytes], *, eio_is_eof: bool = False
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            await _wait_fd(fd, loop.add_reader, loop.remove_reader)
            continue
        except OSError as exc:
            if eio_is_eof and exc.errno == errno.EIO:  # the terminal's last holder closed it
                return
            raise
        if not data:
            return
        writer.write(data)
        await writer.drain()


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


async def _reap_every(period_s: float, tracked: set[int]) -> None:
    while True:
        await asyncio.sleep(period_s)
        _reap_orphans(tracked)


def _reap_orphans(tracked: set[int]) -> None:
    """As a subreaper, orphans of the session's processes become this process's children:
    reap those no one waits for by pid (the tracked ones are waited for by pidfd)."""
    me = os.getpid()
    for proc in procs.table().values():
        if proc.ppid == me and proc.pid not in tracked and _zombie(proc.pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return False
    return text[text.rindex(")") + 2 :].startswith("Z")
