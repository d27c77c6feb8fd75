"""A session's processes: a shell or a command per SSH channel, with or without a PTY,
each in a session of its own, waited for by pidfd, hung up and killed with the session."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncssh

from corral.agent import procs

if TYPE_CHECKING:
    from corral.agent.sessions.server import Session


READ_CHUNK = 256 * 1024
# Variables a client may send (`SendEnv`), as most distributions' sshd accepts.
_CLIENT_ENV = ("LANG", "LC_", "TERM", "COLORTERM")


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
