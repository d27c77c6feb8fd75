"""`corral up` / `corral down` process management, with a stand-in for `corral server` and
`corral agent` (the `CliDeps.self_argv` seam), so these run in seconds with no real server.

The stand-in records what it was started with and when it got SIGTERM; the real path is
covered by tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.cli.procs import stop_pid

FAKE_CORRAL = r"""
import http.server, json, os, signal, sys, time

home = os.environ["CORRAL_HOME"]
role, args = sys.argv[1], sys.argv[2:]  # argv after the role
mode = os.environ.get("FAKE_MODE", "")


def record(event, **data):
    with open(os.path.join(home, f"fake-{role}.jsonl"), "a") as f:
        f.write(json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), **data}) + "\n")


def on_term(signum, frame):
    record("sigterm")
    sys.exit(0)


signal.signal(signal.SIGTERM, on_term)
record("start", argv=args, env={k: v for k, v in os.environ.items() if k.startswith("CORRAL_")})
if role == "agent":
    while True:
        time.sleep(0.05)
if mode == "gateway-crash" and role == "gateway":
    print("OSError: [Errno 98] address already in use", flush=True)
    sys.exit(4)
if mode == "crash" and role == "server":
    print("boom: database is locked", flush=True)
    sys.exit(3)
if mode == "mute" and role == "server":
    print("migrating forever", flush=True)
    while True:
        time.sleep(0.05)
port = int(args[args.index("--port") + 1])
# The gateway stand-in only answers its health check; the admin token is the server's.
admin_file = os.environ.get("CORRAL_BOOTSTRAP_ADMIN_TOKEN_FILE")
admin = open(admin_file).read().strip() if admin_file else None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path in ("/healthz", "/_corral/healthz"):
            self.reply(200, {"ok": True})
        elif self.headers.get("Authorization") != f"Bearer {admin}":
            self.reply(401, {"error": {"code": "unauthorized", "message": "bad token"}})
        elif self.path == "/v1/nodes":
            now = time.time()
            up = os.path.exists(os.path.join(home, "fake-agent.jsonl"))
            gpus = [{"index": i, "model": "H100", "memory_mb": 81559, "uuid": f"GPU-{i}",
                     "healthy": True, "allocated": False} for i in range(2)]
            node = {"id": "n1", "name": "here", "address": None, "condition": "ready",
                    "gpu_backend": "fake", "gpus": gpus, "cpus": 4, "memory_mb": 8192,
                    "disk_mb": 0, "labels": {}, "agent_version": "x", "connected": True,
                    "last_heartbeat_at": now, "heartbeat_age_s": 0.1, "registered_at": now}
            self.reply(200, {"nodes": [node] if up else []})
        else:
            self.reply(404, {"detail": "Not Found"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever(poll_interval=0.05)
"""


@pytest.fixture
def fake(tmp_path: Path) -> list[str]:
    path = tmp_path / "fake_corral.py"
    path.write_text(FAKE_CORRAL)
    return [sys.executable, str(path)]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    # Whatever a failing test left running: stop it, by the pids the stand-ins recorded.
    for role in ("gateway", "agent", "server"):
        for event in events(home, role):
            if event["event"] == "start":
                stop_pid(event["pid"], 1.0)


def events(home: Path, role: str) -> list[dict[str, Any]]:
    path = home / f"fake-{role}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def started(home: Path, role: str) -> dict[str, Any]:
    return next(e for e in events(home, role) if e["event"] == "start")


def sigterm_at(home: Path, role: str) -> float:
    return next(e["t"] for e in events(home, role) if e["event"] == "sigterm")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cli(fake: list[str], home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    runner = CliRunner(
        env={
            "NO_COLOR": "1",
            "CORRAL_SERVER": None,
            "CORRAL_TOKEN": None,
            "FAKE_MODE": None,
            **(env or {}),
        }
    )
    return runner.invoke(build_app(CliDeps(home=home, self_argv=fake)), list(args))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_up_detach_starts_all_three_then_down_stops_them_in_order(
    fake: list[str], home: Path
) -> None:
    home.mkdir()
    remote = {"server": "https://corral.example.com", "token": "crl_remote", "workspace": "ml"}
    (home / "config.json").write_text(json.dumps(remote))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    gw_port = free_port()
    try:
        result = cli(
            fake,
            home,
            "up",
            "--detach",
            "--port",
            str(taken),
            "--gateway-port",
            str(gw_port),
            "--fake-gpus",
            "H100:2",
        )
    finally:
        busy.close()
    assert result.exit_code == 0, result.output
    up_state = json.loads((home / "up.json").read_text())
    port = up_state["port"]
    url = f"http://127.0.0.1:{port}"
    gw_url = f"http://127.0.0.1:{gw_port}"
    assert port != taken and f"port {taken} is in use; using {port}" in result.stderr
    assert url in result.stdout and "2×H100 (fake)" in result.stdout
    assert f"gateway {gw_url} (endpoints at /ep/NAME/)" in result.stdout

    config_path = home / "config.json"
    config = json.loads(config_path.read_text())
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    assert config["server"] == url and config["workspace"] == "default"
    assert config["token"].startswith("crl_") and len(config["token"]) > 40
    # A config for another server is not reused (its token means nothing here) nor lost.
    assert json.loads((home / "config.json.bak").read_text()) == remote

    server = started(home, "server")
    assert server["argv"] == ["--host", "127.0.0.1", "--port", str(port), "--home", str(home)]
    assert server["env"]["CORRAL_HOME"] == str(home)
    # Tokens travel in 0600 files, never in an environment (/proc/PID/environ) or argv.
    secrets = home / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    admin_file = Path(server["env"]["CORRAL_BOOTSTRAP_ADMIN_TOKEN_FILE"])
    assert admin_file.read_text().strip() == config["token"]
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o600
    # The server knows the gateway's address from its start, to show it in endpoint views.
    assert server["env"]["CORRAL_GATEWAY_PUBLIC_URL"] == gw_url
    join_file = Path(server["env"]["CORRAL_BOOTSTRAP_JOIN_TOKEN_FILE"])
    join = join_file.read_text().strip()
    assert join.startswith("crj_")
    assert stat.S_IMODE(join_file.stat().st_mode) == 0o600

    gateway = started(home, "gateway")
    assert gateway["argv"] == [
        "--host",
        "127.0.0.1",
        "--port",
        str(gw_port),
        "--server",
        url,
        "--token-file",
        str(admin_file),  # an admin's: it reads routes
    ]
    assert gateway["t"] > server["t"]

    agent = started(home, "agent")
    assert agent["argv"][:2] == ["--server", url]
    assert "--stop-replicas-on-exit" in agent["argv"]
    assert agent["argv"][agent["argv"].index("--state-dir") + 1] == str(home / "agent")
    assert agent["argv"][agent["argv"].index("--fake-gpus") + 1] == "H100:2"
    assert agent["argv"][agent["argv"].index("--join-token-file") + 1] == str(join_file)
    for child in (server, gateway, agent):
        values = " ".join([*child["env"].values(), *child["argv"]])
        assert config["token"] not in values and join not in values
    assert "CORRAL_TOKEN" not in agent["env"]
    assert join not in " ".join(agent["argv"])  # kept out of `ps`
    assert up_state["pids"] == {
        "server": server["pid"],
        "gateway": gateway["pid"],
        "agent": agent["pid"],
    }

    again = cli(fake, home, "up", "--detach", "--port", str(port))
    assert again.exit_code == 1
    assert f"corral is already running at {url}" in again.stderr

    down = cli(fake, home, "down")
    assert down.exit_code == 0, down.output
    assert "gateway (pid" in down.stdout
    # The gateway finishes open requests while replicas serve; the agent stops them while
    # the server listens.
    assert sigterm_at(home, "gateway") < sigterm_at(home, "agent") < sigterm_at(home, "server")
    assert gone(server["pid"]) and gone(agent["pid"]) and gone(gateway["pid"])
    assert not (home / "up.json").exists()
    assert "nothing is running" in cli(fake, home, "down").stdout

    # The next `corral up` of this home keeps the admin token the server already has.
    reup = cli(fake, home, "up", "--detach", "--port", str(port), "--no-gateway")
    assert reup.exit_code == 0, reup.output
    assert json.loads(config_path.read_text())["token"] == config["token"]
    assert cli(fake, home, "down").exit_code == 0


def test_no_gateway_starts_none_and_tells_the_server_of_none(fake: list[str], home: Path) -> None:
    result = cli(fake, home, "up", "--detach", "--port", str(free_port()), "--no-gateway")
    assert result.exit_code == 0, result.output
    try:
        assert "  gateway " not in result.stdout and "/ep/NAME/" not in result.stdout
        assert "CORRAL_GATEWAY_PUBLIC_URL" not in started(home, "server")["env"]
        assert events(home, "gateway") == []
        assert set(json.loads((home / "up.json").read_text())["pids"]) == {"server", "agent"}
    finally:
        assert cli(fake, home, "down").exit_code == 0


def test_a_gateway_that_exits_is_reported_and_everything_stopped(
    fake: list[str], home: Path
) -> None:
    result = cli(
        fake,
        home,
        "up",
        "--detach",
        "--port",
        str(free_port()),
        "--gateway-port",
        str(free_port()),
        env={"FAKE_MODE": "gateway-crash"},
    )
    assert result.exit_code == 1
    assert "error: the gateway exited with code 4 while starting; see " in result.stderr
    assert str(home / "logs" / "gateway.log") in result.stderr
    assert "address already in use" in result.stderr
    assert gone(started(home, "server")["pid"]) and gone(started(home, "agent")["pid"])
    assert not (home / "up.json").exists()


def test_the_gateway_port_is_never_the_one_picked_for_the_api() -> None:
    from corral.cli.localrun import pick_port

    port = free_port()
    assert pick_port("127.0.0.1", port) == port
    assert pick_port("127.0.0.1", port, avoid=frozenset({port})) != port


def test_a_server_that_exits_is_reported_with_its_log(fake: list[str], home: Path) -> None:
    result = cli(
        fake, home, "up", "--detach", "--port", str(free_port()), env={"FAKE_MODE": "crash"}
    )
    assert result.exit_code == 1
    assert "error: the server exited with code 3 while starting; see " in result.stderr
    assert str(home / "logs" / "server.log") in result.stderr
    assert "boom: database is locked" in result.stderr
    assert "Traceback" not in result.output
    assert not (home / "up.json").exists() and not events(home, "agent")


def test_a_server_that_never_gets_healthy_is_stopped(fake: list[str], home: Path) -> None:
    result = cli(
        fake,
        home,
        "up",
        "--detach",
        "--port",
        str(free_port()),
        "--timeout",
        "1",
        env={"FAKE_MODE": "mute"},
    )
    assert result.exit_code == 1
    assert "the server did not become healthy within 1 s; see " in result.stderr
    assert "migrating forever" in result.stderr
    assert gone(started(home, "server")["pid"])
    assert not (home / "up.json").exists()


def test_foreground_up_stops_everything_on_ctrl_c(fake: list[str], home: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from corral.cli.config import CliDeps\n"
        "from corral.cli.main import build_app\n"
        f"app = build_app(CliDeps(home=Path({str(home)!r}), self_argv={fake!r}))\n"
        "app(sys.argv[1:], prog_name='corral')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "up", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "NO_COLOR": "1"},
    )
    # Ctrl-C once the user sees "corral is up" (up.json is written a moment before it).
    lines: list[str] = []
    up = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "corral is up" in line:
                up.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        assert up.wait(30), "".join(lines)
        assert json.loads((home / "up.json").read_text())["supervisor_pid"] == proc.pid
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=10)
        assert proc.stderr is not None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "corral is down" in err
    assert sigterm_at(home, "gateway") < sigterm_at(home, "agent") < sigterm_at(home, "server")
    assert gone(started(home, "server")["pid"]) and gone(started(home, "agent")["pid"])
    assert gone(started(home, "gateway")["pid"])
    assert not (home / "up.json").exists()


def test_stop_pid_escalates_to_sigkill_for_a_process_that_ignores_sigterm() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    started_at = time.monotonic()
    assert stop_pid(child.pid, 0.3) == "killed"
    assert time.monotonic() - started_at < 5
    assert gone(child.pid)  # stop_pid reaped it; Popen only sees that it is gone
    assert stop_pid(child.pid, 0.3) == "gone"
