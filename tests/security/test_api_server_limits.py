"""Issue 9: the API server as deployed (server/main.py's uvicorn settings, the real app)
bounds a request head, keeps refusing smuggling tricks, and is not held by a client that
trickles its head. A real server on loopback, attacked over raw sockets."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from corral.server.app import create_app
from corral.server.config import ServerOptions
from corral.server.main import MAX_HEAD_BYTES, uvicorn_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    home: Path = tmp_path_factory.mktemp("home")
    options = ServerOptions(home=home, bootstrap_admin_token="crl_admin")
    # Bound and listening before the server runs: a client may connect at once, and the
    # kernel holds it until the server accepts (no waiting for "ready").
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = int(sock.getsockname()[1])
    config = uvicorn_config(create_app(options), "127.0.0.1", port, log_level="error")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield "127.0.0.1", port
    srv.should_exit = True
    thread.join(timeout=30)
    sock.close()


def exchange(addr: tuple[str, int], data: bytes) -> bytes:
    """Send `data` (as much as the server takes) and read until the server closes."""
    with socket.create_connection(addr, timeout=30) as conn:
        with contextlib.suppress(OSError):  # the server closed early: its answer is below
            conn.sendall(data)
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def test_a_huge_header_is_refused_and_the_connection_closed(server: tuple[str, int]) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * 1024 * 1024)
    answer = exchange(server, head + b"\r\nConnection: close\r\n\r\n")
    # 400 and a closed connection (exchange returned: the server closed it).
    assert status(answer) == 400


def test_a_head_within_the_bound_is_served(server: tuple[str, int]) -> None:
    big = b"a" * (MAX_HEAD_BYTES // 2)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\nConnection: close\r\n\r\n"
    assert status(exchange(server, head)) == 200


SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        # Both framings: a front proxy and this server could disagree on where it ends.
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 0x5\r\n",
    ],
)
def test_ambiguous_body_framing_is_refused(server: tuple[str, int], framing: bytes) -> None:
    request = b"POST /v1/whoami HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n0\r\n\r\n" + SMUGGLED
    answer = exchange(server, request)
    assert status(answer) in (400, 501), answer[:200]
    # One answer, then the connection closed: the smuggled request was never served.
    assert answer.count(b"HTTP/1.1 ") == 1


def test_a_client_trickling_its_head_holds_nobody_else(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=30) as slow:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ":
            slow.sendall(bytes([byte]))
        with httpx.Client(base_url=f"http://{server[0]}:{server[1]}", timeout=10) as client:
            for _ in range(5):
                assert client.get("/healthz").status_code == 200
        slow.sendall(b"done\r\nConnection: close\r\n\r\n")
        assert status(slow.recv(65536)) == 200
