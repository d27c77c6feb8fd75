"""The multi-host harness: hosts reach a server in the root namespace by their own
addresses, a host's link going down cuts it off (and only it), and everything is removed."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from support.netns import Host, Hosts, Kind, make_hosts, netns_available

T = TypeVar("T")
AVAILABLE, WHY = netns_available()

# Connects to the server once every 20 ms from the host's own address, for at most 60 s
# (it stops by itself), printing whether each try got through.
PINGER = """
import socket, sys, time
gateway, port, me, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        with socket.create_connection((gateway, port), timeout=0.3, source_address=(me, 0)) as s:
            s.sendall(name.encode() + b"\\n")
            ok = s.recv(16) == b"ok\\n"
        print("ok" if ok else "bad", flush=True)
    except OSError as exc:
        print("fail", type(exc).__name__, flush=True)
    time.sleep(0.02)
"""


def until(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Recorder(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str) -> None:
        super().__init__((address, 0), Handler)
        self.hits: Counter[tuple[str, str]] = Counter()  # (peer address, name it said)
        self.lock = threading.Lock()

    def count(self, host: Host) -> int:
        with self.lock:
            return self.hits[(host.address, host.name)]


class Handler(socketserver.StreamRequestHandler):
    server: Recorder

    def handle(self) -> None:
        name = self.rfile.readline().decode().strip()
        with self.server.lock:
            self.server.hits[(self.client_address[0], name)] += 1
        self.wfile.write(b"ok\n")


@pytest.fixture(params=["auto", "loopback"])
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    kind: Kind | None = None if request.param == "auto" else "loopback"
    with make_hosts(2, kind=kind) as made:
        yield made


def test_netns_availability_is_known_and_used() -> None:
    # Where namespaces cannot be made the reason is printed with the warning; here it says.
    with make_hosts(1) as made:
        assert made.kind == ("netns" if AVAILABLE else "loopback"), WHY


def test_hosts_reach_the_gateway_by_their_own_address_until_their_link_goes_down(
    hosts: Hosts, tmp_path: Path
) -> None:
    server = Recorder(hosts.gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    h0, h1 = hosts[0], hosts[1]
    assert len({h0.address, h1.address, hosts.gateway}) == 3
    if hosts.kind == "netns":
        assert not h0.address.startswith("127.")
        # A namespace has a loopback of its own: the root namespace's is out of reach.
        probe = h0.run([sys.executable, "-c", _connect_script("127.0.0.1", port)])
        assert probe.stdout.strip() == "unreachable", probe.stderr
    logs = {h.name: (tmp_path / f"{h.name}.log").open("wb") for h in hosts}
    try:
        procs = [
            h.popen(
                [sys.executable, "-c", PINGER, hosts.gateway, str(port), h.address, h.name],
                stdout=logs[h.name],
                stderr=subprocess.STDOUT,
            )
            for h in hosts
        ]
        until("both hosts to get through", lambda: server.count(h0) and server.count(h1))

        h0.link_down()
        settled = server.count(h0) + 1  # one exchange may have been in flight
        after = server.count(h1)
        until("host 1 to carry on", lambda: server.count(h1) >= after + 15)
        assert server.count(h0) <= settled, "host 0 got through with its link down"
        assert procs[0].poll() is None, "host 0's processes keep running"
        if hosts.kind == "netns":
            until("host 0 to see its connects fail", lambda: b"fail" in _read(tmp_path, h0))

        h0.link_up()
        before = server.count(h0)
        until("host 0 to get through again", lambda: server.count(h0) > before)

        h1.kill()
        assert procs[1].wait(10) != 0
        assert h1.pids() == []
        assert procs[0].poll() is None
    finally:
        server.shutdown()
        server.server_close()
        for log in logs.values():
            log.close()
    assert {addr for addr, _ in server.hits} == {h0.address, h1.address}


def test_close_removes_namespaces_bridge_and_processes() -> None:
    made = make_hosts(2)
    proc = made[0].popen(["sleep", "600"])
    names = [h.netns for h in made]
    made.close()
    assert proc.wait(10) != 0
    if made.kind == "netns":
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not any(name in listed for name in names)
        link = subprocess.run(["ip", "link", "show", made.bridge], capture_output=True, text=True)
        assert link.returncode != 0
    made.close()  # twice is fine


def _connect_script(address: str, port: int) -> str:
    return (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=1).close()\n"
        "    print('reached')\n"
        "except OSError:\n"
        "    print('unreachable')\n"
    )


def _read(tmp: Path, host: Host) -> bytes:
    return (tmp / f"{host.name}.log").read_bytes()


def test_loopback_hosts_bind_their_own_addresses() -> None:
    with make_hosts(2, kind="loopback") as made:
        for h in made:
            with socket.socket() as s:
                s.bind((h.address, 0))  # the whole of 127/8 is this machine's
