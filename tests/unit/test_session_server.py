"""The session server in-process (unconfined), behind a small relay that plays the control
plane: it accepts the server's dial-back (checking the ticket) and bridges it to a local TCP
port, where an asyncssh client connects as a user's `ssh` would."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from corral.agent.sessions.config import SessionConfig, relay_url
from corral.agent.sessions.server import serve as serve_session
from support.session_relay import TICKET, Keys, Relay

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        host=asyncssh.generate_private_key("ssh-ed25519"),
        user=asyncssh.generate_private_key("ssh-ed25519"),
    )


def config(relay: Relay, keys: Keys, cwd: Path, **extra: Any) -> SessionConfig:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update({"SHELL": "/bin/bash", "SESSION_MARK": "marked-42"})
    return SessionConfig(
        session_id="s1",
        ticket=extra.pop("ticket", TICKET),
        relay_url=relay_url(relay.url, "s1"),
        authorized_keys=[keys.user.export_public_key().decode()],
        host_key=keys.host.export_private_key().decode(),
        env=env,
        cwd=str(cwd),
        **extra,
    )


@contextlib.asynccontextmanager
async def session(
    keys: Keys, cwd: Path, client_key: asyncssh.SSHKey | None = None
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    async with Relay() as relay:
        server = asyncio.create_task(serve_session(config(relay, keys, cwd)))
        trusted = asyncssh.import_known_hosts(
            f"[127.0.0.1]:{relay.port} " + keys.host.export_public_key().decode()
        )
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                relay.port,
                username="anyone",
                client_keys=[client_key or keys.user],
                known_hosts=trusted,
                agent_path=None,
            ) as conn:
                yield conn
        finally:
            assert await asyncio.wait_for(server, 15) == 0


async def until(what: str, probe: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def read_until(stream: asyncssh.SSHReader[str], marker: str, timeout: float = 10) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} in {seen!r}")
        seen += await asyncio.wait_for(stream.read(4096), left)
    return seen


def test_exec_status_stderr_env_and_cwd(keys: Keys, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(keys, tmp_path) as conn:
            ok = await conn.run("echo ok")
            assert (ok.exit_status, ok.stdout) == (0, "ok\n")
            three = await conn.run("exit 3")
            assert three.exit_status == 3
            split = await conn.run("echo out; echo err >&2")
            assert (split.stdout, split.stderr) == ("out\n", "err\n")
            where = await conn.run('pwd; echo "$SESSION_MARK"')
            assert where.stdout == f"{tmp_path}\nmarked-42\n"
            killed = await conn.run("kill -TERM $$")
            assert killed.exit_signal is not None and killed.exit_signal[0] == "TERM"
            fed = await conn.run("cat", input="from stdin")
            assert fed.stdout == "from stdin"

    run(scenario())


def test_pty_shell_tty_and_window_size(keys: Keys, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with session(keys, tmp_path) as conn:
            tty = await conn.run("tty", term_type="xterm")
            assert tty.stdout is not None and str(tty.stdout).startswith("/dev/pts/")
            shell = await conn.create_process(term_type="xterm", term_size=(80, 24))
            # The marker is computed: the terminal's echo of the line does not contain it.
            shell.stdin.write("stty size; echo END$((40+2))\n")
            assert "24 80\r\nEND42" in await read_until(shell.stdout, "END42")
            shell.change_terminal_size(100, 40)
            shell.stdin.write("stty size; echo END$((40+3))\n")
            assert "40 100\r\nEND43" in await read_until(shell.stdout, "END43")
            shell.stdin.write("exit 5\n")
            assert (await asyncio.wait_for(shell.wait(), 10)).exit_status == 5

    run(scenario())


def test_sftp_round_trip(keys: Keys, tmp_path: Path) -> None:
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    work = tmp_path / "work"
    work.mkdir()

    async def scenario() -> None:
        async with session(keys, work) as conn, conn.start_sftp_client() as sftp:
            await sftp.put(str(local), "copied.bin")
            await sftp.get("copied.bin", str(tmp_path / "down.bin"))

    run(scenario())
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    assert hashlib.sha256((work / "copied.bin").read_bytes()).hexdigest() == digest
    assert hashlib.sha256((tmp_path / "down.bin").read_bytes()).hexdigest() == digest


LISTEN = (
    "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
    "print(s.getsockname()[1], flush=True); c,_=s.accept(); c.sendall(b'from-child'); c.close()"
)


def test_forwarding_only_to_the_sessions_own_listeners(keys: Keys, tmp_path: Path) -> None:
    async def scenario() -> None:
        foreign = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        foreign_port = foreign.sockets[0].getsockname()[1]
        async with session(keys, tmp_path) as conn:
            child = await conn.create_process(f'{sys.executable} -c "{LISTEN}"')
            port = int(await asyncio.wait_for(child.stdout.readline(), 10))
            reader, writer = await conn.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), 10) == b"from-child"
            writer.close()
            with pytest.raises(asyncssh.ChannelOpenError, match="not held by a process"):
                await conn.open_connection("127.0.0.1", foreign_port)
            with pytest.raises(asyncssh.ChannelOpenError, match=r"only 127\.0\.0\.1"):
                await conn.open_connection("10.0.0.1", 22)
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
        foreign.close()

    run(scenario())


def test_wrong_key_is_refused(keys: Keys, tmp_path: Path) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")

    async def scenario() -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            async with session(keys, tmp_path, client_key=stranger):
                pass

    run(scenario())


def test_wrong_ticket_ends_the_server(keys: Keys, tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        async with Relay() as relay:
            code = await serve_session(config(relay, keys, tmp_path, ticket="tk_wrong"))
            return code, relay.refused

    assert run(scenario()) == (1, 1)


def test_session_processes_end_with_the_connection(keys: Keys, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def scenario() -> None:
        async with session(keys, tmp_path) as conn:
            await conn.create_process(f"echo $$ > {pid_file}; exec sleep 300")
            await until("the child's pid", lambda: pid_file.exists() and pid_file.read_text() != "")
        pid = int(pid_file.read_text())
        await until("the child to end", lambda: not _alive(pid))

    run(scenario())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_socket_names_are_loopback() -> None:
    # The harness itself never leaves loopback.
    assert socket.gethostbyname("localhost") in ("127.0.0.1", "127.0.1.1")
