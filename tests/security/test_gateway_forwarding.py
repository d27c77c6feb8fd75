"""Issue 9: at the edge a client's forwarding headers are not believed, a request's Host
and body framing are unambiguous (no request smuggling). Against a real gateway process
and a replica that reports the head it received."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.harness import EchoReplica, GatewayProc, echo_stack, raw_request, status_of

SPOOFED = (
    b"x-forwarded-for: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nforwarded: for=6.6.6.6\r\n"
    b"x-forwarded-proto: https\r\nx-forwarded-host: bank.example\r\n"
)


def get(gateway: GatewayProc, extra: bytes = b"") -> bytes:
    head = b"GET /ep/echo/ HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n" + extra + b"\r\n"
    return raw_request(gateway.port, head)


def received(replica: EchoReplica, name: str) -> list[str]:
    assert len(replica.heads) == 1, replica.heads
    return [value for key, value in replica.heads[0] if key.lower() == name]


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[GatewayProc, EchoReplica]]:
    with echo_stack(tmp_path) as pair:
        yield pair


def test_client_forwarding_headers_are_replaced_by_the_peer_address(
    edge: tuple[GatewayProc, EchoReplica],
) -> None:
    gateway, replica = edge
    assert status_of(get(gateway, SPOOFED)) == 200
    assert received(replica, "x-forwarded-for") == ["127.0.0.1"]
    assert received(replica, "x-real-ip") == ["127.0.0.1"]
    assert received(replica, "forwarded") == ["for=127.0.0.1;proto=http"]
    assert received(replica, "x-forwarded-proto") == ["http"]
    assert received(replica, "x-forwarded-host") == ["gw"]


def test_a_trusted_proxy_keeps_its_chain_and_the_peer_is_appended(tmp_path: Path) -> None:
    with echo_stack(tmp_path, "--trusted-proxies", "10.0.0.0/8, 127.0.0.1/32") as (
        gateway,
        replica,
    ):
        assert status_of(get(gateway, SPOOFED)) == 200
        assert received(replica, "x-forwarded-for") == ["6.6.6.6, 127.0.0.1"]
        assert received(replica, "x-real-ip") == ["6.6.6.6"]
        assert received(replica, "forwarded") == ["for=6.6.6.6, for=127.0.0.1"]
        assert received(replica, "x-forwarded-proto") == ["https"]
        assert received(replica, "x-forwarded-host") == ["bank.example"]


def test_a_second_host_header_is_refused(edge: tuple[GatewayProc, EchoReplica]) -> None:
    gateway, replica = edge
    response = get(gateway, b"host: other\r\n")
    assert status_of(response) == 400, response[:300]
    assert replica.connections == 0


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"content-length: 3\r\ntransfer-encoding: chunked\r\n", 400),
        (b"transfer-encoding: chunked\r\ncontent-length: 3\r\n", 400),
        (b"content-length: 3\r\ncontent-length: 4\r\n", 400),
        (b"content-length: 3\r\ncontent-length: 3\r\n", 400),
        (b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n", 400),
        (b"transfer-encoding: chunkedx\r\n", 501),
        (b"transfer-encoding: gzip, chunked\r\n", 501),
        (b"transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n", 501),
    ],
)
def test_ambiguous_framing_is_refused_before_reaching_a_replica(
    edge: tuple[GatewayProc, EchoReplica], extra: bytes, status: int
) -> None:
    gateway, replica = edge
    head = b"POST /ep/echo/ HTTP/1.1\r\nhost: gw\r\n" + extra + b"\r\n"
    response = raw_request(gateway.port, head + b"0\r\n\r\nGET /ep/echo/x HTTP/1.1\r\n\r\n")
    assert status_of(response) == status, response[:300]
    assert response.count(b"HTTP/1.1 ") == 1  # nothing smuggled in behind it was answered
    assert replica.connections == 0
