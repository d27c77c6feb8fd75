"""The node's lifeline (agent/lifeline.py): quiet while the agent beats, speaking for the
host once the beat is stale, and gone when it has nothing left to speak for."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent import lifeline
from corral.agent.layout import write_json_atomic


class _Server(http.server.ThreadingHTTPServer):
    status = 204
    pings: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        self.server.pings.append(self.headers.get("Authorization", ""))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.pings = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifeline, "LOOK_S", 0.01)
    monkeypatch.setattr(lifeline, "STALE_S", 0.2)
    monkeypatch.setattr(lifeline, "PING_S", 0.02)
    monkeypatch.setattr(lifeline, "MAX_AWAY_S", 3.0)


def _state(tmp_path: Path, server: _Server) -> Path:
    port = server.server_address[1]
    write_json_atomic(
        tmp_path / lifeline.NODE,
        {"server": f"http://127.0.0.1:{port}", "node_id": "n", "node_token": "crn_x"},
    )
    write_json_atomic(tmp_path / lifeline.LIFELINE, {"pid": os.getpid(), "start_time": 0})
    return tmp_path


def _run(state: Path) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(lifeline.run(state)), daemon=True)
    thread.start()
    return thread, result


def _until(what: str, ok: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(ok) and ok():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_quiet_while_the_agent_beats_then_speaks_for_the_host(
    tmp_path: Path, server: _Server
) -> None:
    state = _state(tmp_path, server)
    lifeline.touch(state)
    thread, _ = _run(state)
    beating_until = time.monotonic() + 0.6
    while time.monotonic() < beating_until:
        lifeline.touch(state)
        time.sleep(0.02)
    assert server.pings == [], "a connected agent's lifeline stays quiet"
    _until("the lifeline to speak", lambda: len(server.pings) >= 2)  # the beat is stale
    assert server.pings[0] == "Bearer crn_x"
    write_json_atomic(state / lifeline.LIFELINE, {"pid": 1, "start_time": 0})
    thread.join(5)
    assert not thread.is_alive(), "another lifeline took its place: it stops"


def test_it_stops_when_the_server_forgot_the_node(tmp_path: Path, server: _Server) -> None:
    server.status = 401
    thread, result = _run(_state(tmp_path, server))
    thread.join(5)
    assert result == [0] and len(server.pings) == 1


def test_it_stops_when_no_agent_ever_connected(tmp_path: Path, server: _Server) -> None:
    state = _state(tmp_path, server)
    (state / lifeline.NODE).unlink()  # never registered: nothing to speak for
    thread, result = _run(state)
    thread.join(lifeline.MAX_AWAY_S + 3)
    assert result == [0], "it does not linger when no agent ever connected"
