"""A server stops on SIGTERM while every controller is mid-round, a gateway's long poll is
held and an agent is connected, on both databases — and hands the controller lease over,
so the next server starts at once.

Each controller's round is made slow (it sleeps before its real work, as a round over a
slow database would), so that the stop comes while rounds run in worker threads.
`CORRAL_SHUTDOWN_ROUNDS=20` repeats each case 20 times (issue 11's check).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

from support.app import ADMIN_TOKEN, JOIN_TOKEN
from support.cluster import Proc, free_port, wait_for

ROUNDS = int(os.environ.get("CORRAL_SHUTDOWN_ROUNDS", "2"))
SLOW_ROUND_S = 1.5
STOP_WITHIN_S = 8.0  # a round's delay, and room: never the 10 s a stuck controller gets
CONTROLLERS = ("scheduler", "liveness", "endpoints")

# The server, with every controller's round slow; it marks each round's start in $BUSY_DIR.
SERVER = """
import os, sys, time
from pathlib import Path
from corral.server.controllers import runner

busy = Path(os.environ["BUSY_DIR"])
real = runner.Runner.round

def slow_round(self, cp):
    (busy / self.controller.name).touch()
    time.sleep(float(os.environ["SLOW_ROUND_S"]))
    return real(self, cp)

runner.Runner.round = slow_round
from corral.cli.main import main
sys.argv = ["corral", "server", "--port", os.environ["PORT"]]
main()
"""


def _server(tmp_path: Path, database_url: str, port: int, n: int) -> Proc:
    env = {
        **os.environ,
        "CORRAL_HOME": str(tmp_path / "home"),
        "CORRAL_DATABASE_URL": database_url,
        "CORRAL_BOOTSTRAP_ADMIN_TOKEN": ADMIN_TOKEN,
        "CORRAL_BOOTSTRAP_JOIN_TOKEN": JOIN_TOKEN,
        "CORRAL_HEARTBEAT_INTERVAL": "0.5",
        "BUSY_DIR": str(tmp_path / "busy"),
        "SLOW_ROUND_S": str(SLOW_ROUND_S),
        "PORT": str(port),
    }
    return Proc([sys.executable, "-c", SERVER], env, tmp_path / f"server-{n}.log")


def _agent(tmp_path: Path, url: str) -> Proc:
    argv = [sys.executable, "-m", "corral.cli.main", "agent", "--server", url]
    argv += ["--join-token", JOIN_TOKEN, "--name", "n1", "--isolation", "none"]
    argv += ["--state-dir", str(tmp_path / "agent")]
    return Proc(argv, {**os.environ, "CORRAL_HOME": str(tmp_path / "home")}, tmp_path / "a.log")


def _long_poll(url: str, answers: list[int | str]) -> threading.Thread:
    """A gateway's route poll, held until the table changes (it will not)."""

    def poll() -> None:
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=90) as client:
            first = client.get("/v1/gateway/routes").json()
            try:
                held = client.get(
                    "/v1/gateway/routes", params={"after": first["version"], "wait": 60}
                )
                answers.append(held.status_code)
            except httpx.HTTPError as exc:  # the connection closed by the stopping server
                answers.append(type(exc).__name__)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return thread


def test_the_server_stops_on_sigterm_while_everything_is_busy(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    busy = tmp_path / "busy"
    busy.mkdir()
    agent = _agent(tmp_path, url)
    try:
        for n in range(ROUNDS):
            _stop_while_busy(_server(tmp_path, database_url, port, n), url, headers, busy, agent, n)
    finally:
        agent.stop(signal.SIGKILL)


def _stop_while_busy(
    server: Proc, url: str, headers: dict[str, str], busy: Path, agent: Proc, n: int
) -> None:
    started = time.monotonic()
    server.start()
    try:
        # The lease the last server handed over is taken at once: no wait for its silence.
        wait_for("the server to answer", lambda: httpx.get(url + "/healthz").is_success)
        assert n == 0 or time.monotonic() - started < 8.0, server.output()
        if agent.popen is None:
            agent.start()
        wait_for(
            "the agent to be connected",
            lambda: any(
                node["connected"]
                for node in httpx.get(url + "/v1/nodes", headers=headers).json()["nodes"]
            ),
        )
        answers: list[int | str] = []
        poll = _long_poll(url, answers)
        for old in busy.iterdir():
            old.unlink()
        for name in CONTROLLERS:  # a round of each has begun since
            wait_for(f"a {name} round", lambda name=name: (busy / name).exists())  # type: ignore[misc]
        stopped_at = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=STOP_WITHIN_S + 30)
        took = time.monotonic() - stopped_at
        poll.join(10)
    finally:
        server.stop(signal.SIGKILL)
    log = server.output()
    # uvicorn raises the signal again once it has shut down: the exit says SIGTERM.
    assert code in (0, -signal.SIGTERM), log
    assert took < STOP_WITHIN_S, f"round {n}: stopped after {took:.1f} s\n{log}"
    assert "did not stop" not in log and "Traceback" not in log, log
    assert not poll.is_alive() and answers, "the long poll was still held"
