"""Issue 9: one unauthenticated connection must not make the gateway buffer an endless
request head, or hold a socket by trickling one, while other clients wait.

Each test runs a real `python -m corral.gateway` process and attacks it over loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.harness import EchoReplica, GatewayProc, echo_stack, raw_request, status_of

HUGE = 256 * 1024 * 1024  # what the attacker would send if nobody stopped it


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[GatewayProc, EchoReplica]]:
    with echo_stack(tmp_path, "--head-timeout", "2") as pair:
        yield pair


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class EndlessHeader(threading.Thread):
    """Sends one header whose value never ends, until the gateway stops it or HUGE is sent."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sent = 0
        self.answer = b""
        self.done = threading.Event()

    def run(self) -> None:
        block = b"a" * 65536
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                sock.sendall(b"GET /ep/echo/ HTTP/1.1\r\nhost: x\r\nx-big: ")
                try:
                    while self.sent < HUGE:
                        sock.sendall(block)
                        self.sent += len(block)
                except OSError:
                    pass  # the gateway closed the connection: what it should do
                try:
                    while chunk := sock.recv(65536):
                        self.answer += chunk
                except OSError:
                    pass
        finally:
            self.done.set()


def test_an_endless_header_gets_431_and_others_are_served_meanwhile(
    stack: tuple[GatewayProc, EchoReplica],
) -> None:
    gateway, _ = stack
    before = rss_bytes(gateway.proc.pid)
    attacker = EndlessHeader(gateway.port)
    attacker.start()
    with httpx.Client(base_url=gateway.url, timeout=20.0) as client:

        def one(i: int) -> int:
            return client.get(f"/ep/echo/ok/{i}").status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(one, range(40)))
    assert statuses == [200] * 40
    assert attacker.done.wait(60), "the gateway kept reading the endless header"
    assert attacker.sent < HUGE, "the gateway read the whole endless header"
    # The answer may be lost to the reset that follows closing an unread socket; if it
    # arrived, it is the 431.
    assert attacker.answer == b"" or status_of(attacker.answer) == 431, attacker.answer[:200]
    assert rss_bytes(gateway.proc.pid) - before < 64 * 1024 * 1024


def test_a_one_megabyte_header_is_refused_with_431(stack: tuple[GatewayProc, EchoReplica]) -> None:
    gateway, replica = stack
    head = b"GET /ep/echo/ HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    response = raw_request(gateway.port, head)
    assert status_of(response) in (0, 431), response[:200]  # 0: lost to the reset
    assert replica.connections == 0


def test_a_head_just_over_the_bound_gets_431_in_full(
    stack: tuple[GatewayProc, EchoReplica],
) -> None:
    gateway, replica = stack
    # A little over 64 KiB: small enough that the gateway's answer is not lost to a reset.
    head = b"GET /ep/echo/ HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70000 + b"\r\n\r\n"
    response = raw_request(gateway.port, head)
    assert status_of(response) == 431, response[:200]
    assert b"connection: close" in response.lower()
    assert replica.connections == 0


def test_more_than_100_headers_get_431_and_100_pass(stack: tuple[GatewayProc, EchoReplica]) -> None:
    gateway, replica = stack

    def request(count: int) -> bytes:
        fields = b"".join(b"x-h%d: v\r\n" % i for i in range(count - 2))
        return b"GET /ep/echo/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n" + fields + b"\r\n"

    assert status_of(raw_request(gateway.port, request(101))) == 431
    assert status_of(raw_request(gateway.port, request(20000))) in (0, 431)
    assert replica.connections == 0
    # 100 pass the gateway (the stdlib replica behind it has its own limit of 100, which
    # the gateway's forwarding headers push it over: its answer is proxied back).
    assert b"x-corral-replica: echo-1" in raw_request(gateway.port, request(100))


def test_a_head_trickled_too_slowly_is_cut_with_408(stack: tuple[GatewayProc, EchoReplica]) -> None:
    gateway, replica = stack  # started with --head-timeout 2
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"GET /ep/echo/ HTTP/1.1\r\nhost: x\r\n")
        sock.settimeout(0.2)  # the attack's pace: a byte every 0.2 s until the gateway answers
        deadline = time.monotonic() + 30.0
        answer = b""
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"x")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    assert status_of(answer) == 408, answer[:200]
    assert replica.connections == 0


def test_a_connection_that_never_sends_is_closed(stack: tuple[GatewayProc, EchoReplica]) -> None:
    gateway, _ = stack
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30.0) as sock:
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert status_of(answer) == 408


def test_pipelined_heads_each_under_the_bound_pass_though_together_over_it(
    stack: tuple[GatewayProc, EchoReplica],
) -> None:
    gateway, replica = stack
    one = b"GET /ep/echo/%d HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 40000 + b"\r\n"
    heads = [one % i + b"\r\n" for i in range(2)] + [one % 2 + b"connection: close\r\n\r\n"]
    response = raw_request(gateway.port, b"".join(heads))
    assert response.count(b"HTTP/1.1 200 OK") == 3, response[:300]
    assert len(replica.heads) == 3
