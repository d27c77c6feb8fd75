"""The client end of the relay against a local WebSocket server that plays the control plane:
`corral pod proxy` (a real subprocess) carrying bytes both ways, its one-line errors and exit
255; and asyncssh over the relay to a real SSH server behind it (key auth, pinned host key)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from corral.client.relay import RelayError, connect_ssh, relay_path
from corral.urls import ws_url

TOKEN = "tok"
BASE = "/v1/workspaces/team"


class FakeRelay:
    """The control plane's relay end, on 127.0.0.1 in a thread of its own:
    pods/dev echoes, pods/gone closes with 4404, pods/sshd joins an asyncssh server, and
    anything else (or a bad token) is refused before the WebSocket opens."""

    def __init__(self, ssh_port: int = 0, rest: dict[str, Any] | None = None) -> None:
        self.ssh_port = ssh_port
        self.rest = rest or {}  # path -> JSON answered to a plain GET (the REST API's part)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()
        self.port = self.server.sockets[0].getsockname()[1]
        self.paths: list[str] = []

    async def _start(self) -> Server:
        return await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._check,
            compression=None,
            max_size=None,
        )

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path in self.rest and "Upgrade" not in request.headers:
            response = conn.respond(200, json.dumps(self.rest[request.path]))
            response.headers["Content-Type"] = "application/json"
            return response
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _refuse(conn, 401, "invalid or expired token")
        if request.path == f"{BASE}/pods/viewer/relay":
            return _refuse(conn, 403, "a viewer of workspace team cannot open sessions")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        self.paths.append(path)
        if path == f"{BASE}/pods/gone/relay":
            await ws.close(4404, "pod gone is stopped")
        elif path in (f"{BASE}/pods/sshd/relay", f"{BASE}/jobs/train/relay?replica=1"):
            await self._join_ssh(ws)
        else:
            async for message in ws:
                await ws.send(message)

    async def _join_ssh(self, ws: ServerConnection) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.ssh_port)

        async def up() -> None:
            async for message in ws:
                writer.write(message if isinstance(message, bytes) else message.encode())
                await writer.drain()
            writer.close()

        async def down() -> None:
            while data := await reader.read(256 * 1024):
                await ws.send(data)
            await ws.close()

        tasks = {asyncio.create_task(up()), asyncio.create_task(down())}
        # Either side ending ends the session, as the real relay does.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        writer.close()
        await ws.close()

    def url(self, path: str) -> str:
        return ws_url(f"http://127.0.0.1:{self.port}", path)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _refuse(conn: ServerConnection, status: int, message: str) -> Response:
    body = json.dumps({"error": {"code": "refused", "message": message, "fields": []}})
    return conn.respond(status, body)


@pytest.fixture
def relay() -> Iterator[FakeRelay]:
    server = FakeRelay()
    yield server
    server.close()


def _proxy(
    relay: FakeRelay, name: str, tmp_path: Path, token: str = TOKEN
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CORRAL_HOME": str(tmp_path / "home"),
        "CORRAL_TOKEN": token,
        "CORRAL_SERVER": f"http://127.0.0.1:{relay.port}",
    }
    argv = [sys.executable, "-m", "corral.cli.main", "pod", "proxy", "--workspace", "team", name]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


def test_urls() -> None:
    assert relay_path("team", "pod", "dev") == "/v1/workspaces/team/pods/dev/relay"
    assert relay_path("team", "job", "train", 2) == "/v1/workspaces/team/jobs/train/relay?replica=2"
    assert (
        ws_url("https://cp.example.com/", "/v1/x?replica=0")
        == "wss://cp.example.com/v1/x?replica=0"
    )
    assert ws_url("http://127.0.0.1:7390", "/v1/x") == "ws://127.0.0.1:7390/v1/x"


def test_proxy_carries_bytes_both_ways(relay: FakeRelay, tmp_path: Path) -> None:
    data = os.urandom(8 * 1024 * 1024 + 12345)  # frames of every size, and a ragged end
    proc = _proxy(relay, "dev", tmp_path)
    assert proc.stdin is not None and proc.stdout is not None

    def feed() -> None:
        assert proc.stdin is not None
        for start in range(0, len(data), 100_000):
            proc.stdin.write(data[start : start + 100_000])
        proc.stdin.flush()

    writer = threading.Thread(target=feed)
    writer.start()
    back = bytearray()
    while len(back) < len(data):
        chunk = proc.stdout.read1(1 << 20)
        assert chunk, f"the proxy stopped after {len(back)} bytes: {proc.stderr.read()!r}"  # type: ignore[union-attr]
        back += chunk
    writer.join()
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    proc.stdin.close()  # as ssh does when it is done: the proxy ends, and ends well
    assert proc.wait(timeout=30) == 0
    assert relay.paths == [f"{BASE}/pods/dev/relay"]


@pytest.mark.parametrize(
    ("name", "token", "line"),
    [
        ("viewer", TOKEN, "HTTP 403: a viewer of workspace team cannot open sessions"),
        ("dev", "wrong", "HTTP 401: invalid or expired token"),
        ("gone", TOKEN, "the session ended: pod gone is stopped"),
    ],
)
def test_proxy_refused_is_one_line_and_255(
    relay: FakeRelay, tmp_path: Path, name: str, token: str, line: str
) -> None:
    proc = _proxy(relay, name, tmp_path, token)
    # stdin stays open (ssh's would): the proxy ends because the server said so.
    assert proc.wait(timeout=30) == 255
    assert proc.stderr is not None and proc.stdin is not None
    stderr = proc.stderr.read()
    proc.stdin.close()
    assert stderr.decode().splitlines() == [f"corral: pod {name}: {line}"]


def test_proxy_without_a_server_is_one_line(tmp_path: Path) -> None:
    relay_port = _free_port()
    env = {**os.environ, "CORRAL_HOME": str(tmp_path), "CORRAL_TOKEN": TOKEN}
    argv = [
        sys.executable,
        "-m",
        "corral.cli.main",
        "--server",
        f"http://127.0.0.1:{relay_port}",
        "pod",
        "proxy",
        "--workspace",
        "team",
        "dev",
    ]
    proc = subprocess.run(argv, capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 255
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("corral: pod dev: cannot reach the server")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- asyncssh over the relay ------------------------------------------------------------------


class _Sshd:
    """An asyncssh server on 127.0.0.1: accepts `client_key` only; runs `echo`-like commands."""

    def __init__(self, client_key: asyncssh.SSHKey, host_key: asyncssh.SSHKey) -> None:
        self.client_key = client_key
        self.host_key = host_key

    async def start(self) -> asyncssh.SSHAcceptor:
        authorized = asyncssh.import_authorized_keys(
            self.client_key.export_public_key("openssh").decode()
        )
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=authorized,
            process_factory=self._run,
            server_factory=self._allow_forwarding,
        )

    @staticmethod
    def _allow_forwarding() -> asyncssh.SSHServer:
        class Server(asyncssh.SSHServer):
            def connection_requested(
                self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
            ) -> bool:
                return dest_host == "localhost"

        return Server()

    @staticmethod
    async def _run(process: asyncssh.SSHServerProcess[Any]) -> None:
        term = process.get_terminal_type()
        if term:
            cols, rows, _, _ = process.get_terminal_size()
            process.stdout.write(f"ran {process.command} on a {term} terminal {cols}x{rows}\n")
        else:
            process.stdout.write(f"ran {process.command}\n")
        process.stderr.write("to stderr\n")
        process.exit(3)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, asyncssh.SSHKey, asyncssh.SSHKey]:
    client = asyncssh.generate_private_key("ssh-ed25519")
    host = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / "id_ed25519"
    path.write_bytes(client.export_private_key("openssh"))
    path.chmod(0o600)
    return path, client, host


def test_asyncssh_over_the_relay(keys: tuple[Path, asyncssh.SSHKey, asyncssh.SSHKey]) -> None:
    path, client_key, host_key = keys
    host_line = host_key.export_public_key("openssh").decode().strip()
    other_host = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()

    async def scenario() -> None:
        sshd = await _Sshd(client_key, host_key).start()
        relay = FakeRelay(ssh_port=sshd.sockets[0].getsockname()[1])
        try:
            url = relay.url(f"{BASE}/pods/sshd/relay")
            conn, bridge = await connect_ssh(url, TOKEN, str(path), host_line)
            result = await conn.run("nvidia-smi")
            assert (result.stdout, result.stderr, result.exit_status) == (
                "ran nvidia-smi\n",
                "to stderr\n",
                3,
            )
            conn.close()
            await asyncio.wait_for(bridge, 10)
            # A host that shows another key is not trusted.
            with pytest.raises(RelayError, match="ssh over the relay failed"):
                await connect_ssh(url, TOKEN, str(path), other_host)
            with pytest.raises(RelayError, match="HTTP 403"):
                await connect_ssh(
                    relay.url(f"{BASE}/pods/viewer/relay"), TOKEN, str(path), host_line
                )
        finally:
            # In a thread: the relay's handlers wait on this loop's sshd.
            await asyncio.to_thread(relay.close)
            sshd.close()

    asyncio.run(scenario())


# -- the CLI over the relay: `pod exec`, and OpenSSH through `pod ssh-config` ----------------


@pytest.fixture
def sshd_relay(
    tmp_path: Path, keys: tuple[Path, asyncssh.SSHKey, asyncssh.SSHKey]
) -> Iterator[tuple[FakeRelay, Path]]:
    """A relay whose pods/sshd reaches an asyncssh server (on the relay's loop), the REST
    answers `pod exec` and `ssh-config` need, and a CORRAL_HOME whose key is registered."""
    path, client_key, host_key = keys
    home = tmp_path / "home"
    (home / "ssh").mkdir(parents=True)
    public = client_key.export_public_key("openssh").decode().strip()
    (home / "ssh" / "id_ed25519").write_bytes(path.read_bytes())
    (home / "ssh" / "id_ed25519").chmod(0o600)
    (home / "ssh" / "id_ed25519.pub").write_text(public + "\n")
    host_line = host_key.export_public_key("openssh").decode().strip()
    key_view = {
        "name": "k",
        "workspace": "team",
        "fingerprint": "SHA256:k",
        "public_key": public,
        "added_by": "ann",
        "created_at": 0,
    }
    pod_view = {
        "name": "sshd",
        "workspace": "team",
        "state": "running",
        "spec": {"name": "sshd"},
        "created_at": 0,
    }
    relay = FakeRelay(
        rest={
            f"{BASE}/ssh-keys": {"keys": [key_view]},
            f"{BASE}/ssh/host-key": {"workspace": "team", "public_key": host_line},
            f"{BASE}/pods": {"pods": [pod_view]},
        }
    )
    sshd = asyncio.run_coroutine_threadsafe(
        _Sshd(client_key, host_key).start(), relay.loop
    ).result()
    relay.ssh_port = sshd.sockets[0].getsockname()[1]
    yield relay, home
    relay.loop.call_soon_threadsafe(sshd.close)
    relay.close()


def _env(relay: FakeRelay, home: Path, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HOME": str(tmp_path / "user"),
        "CORRAL_HOME": str(home),
        "CORRAL_TOKEN": TOKEN,
        "CORRAL_SERVER": f"http://127.0.0.1:{relay.port}",
        "CORRAL_WORKSPACE": "team",
    }


def test_pod_exec_streams_and_exits_with_the_remote_code(
    sshd_relay: tuple[FakeRelay, Path], tmp_path: Path
) -> None:
    relay, home = sshd_relay
    argv = [sys.executable, "-m", "corral.cli.main", "pod", "exec", "sshd", "--", "nvidia-smi"]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(relay, home, tmp_path),
        stdin=subprocess.DEVNULL,
    )
    assert (proc.stdout, proc.stderr, proc.returncode) == ("ran nvidia-smi\n", "to stderr\n", 3)


def test_openssh_through_the_generated_config(
    sshd_relay: tuple[FakeRelay, Path], tmp_path: Path
) -> None:
    """The real OpenSSH client: the Include, the ProxyCommand, the pinned host key, the key."""
    relay, home = sshd_relay
    env = _env(relay, home, tmp_path)
    setup = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "pod", "ssh-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert setup.returncode == 0, setup.stderr
    user_config = tmp_path / "user" / ".ssh" / "config"
    ssh = ["ssh", "-F", str(user_config), "-o", "BatchMode=yes", "sshd", "echo", "hi"]
    proc = subprocess.run(
        ssh, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    assert (proc.stdout, proc.returncode) == ("ran echo hi\n", 3), proc.stderr
    # A host key other than the pinned one: OpenSSH refuses to go on.
    known = home / "ssh" / "known_hosts"
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    known.write_text(f"corral.team {other}")
    proc = subprocess.run(
        ssh, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in proc.stderr


def test_job_exec_reaches_the_replica_asked_for(
    sshd_relay: tuple[FakeRelay, Path], tmp_path: Path
) -> None:
    relay, home = sshd_relay
    argv = [sys.executable, "-m", "corral.cli.main", "job", "exec", "train", "-r", "1", "--", "ls"]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(relay, home, tmp_path),
        stdin=subprocess.DEVNULL,
    )
    assert (proc.stdout, proc.returncode) == ("ran ls\n", 3), proc.stderr
    assert relay.paths == [f"{BASE}/jobs/train/relay?replica=1"]


def test_forward_reaches_a_port_in_the_pod(
    keys: tuple[Path, asyncssh.SSHKey, asyncssh.SSHKey],
) -> None:
    """`pod forward`'s SDK half: a local port -> localhost:PORT on the far side."""
    from corral.client.relay import forward

    path, client_key, host_key = keys
    host_line = host_key.export_public_key("openssh").decode().strip()

    async def scenario() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"pong:" + await reader.readline())
            await writer.drain()
            writer.close()

        service = await asyncio.start_server(answer, "127.0.0.1", 0)
        service_port = service.sockets[0].getsockname()[1]
        sshd = await _Sshd(client_key, host_key).start()
        relay = FakeRelay(ssh_port=sshd.sockets[0].getsockname()[1])
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        url = relay.url(f"{BASE}/pods/sshd/relay")
        task = asyncio.create_task(
            forward(url, TOKEN, str(path), host_line, 0, service_port, bound.set_result)
        )
        try:
            port = await asyncio.wait_for(bound, 30)
            for i in range(3):  # a connection each, through one session
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"ping {i}\n".encode())
                assert await asyncio.wait_for(reader.read(), 10) == f"pong:ping {i}\n".encode()
                writer.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(relay.close)
            sshd.close()
            service.close()

    asyncio.run(scenario())


def test_pod_exec_at_a_terminal_gets_a_pty(
    sshd_relay: tuple[FakeRelay, Path], tmp_path: Path
) -> None:
    import pexpect

    relay, home = sshd_relay
    env = {**_env(relay, home, tmp_path), "TERM": "xterm-test"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "corral.cli.main", "pod", "exec", "sshd", "--", "top"],
        env=env,
        dimensions=(33, 101),
        timeout=60,
    )
    child.expect("ran top on a xterm-test terminal 101x33")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
