"""Who sent a request, as the replica is told: X-Forwarded-*, X-Real-IP and Forwarded.

At the edge a client's own forwarding headers are lies waiting to be believed (rate limits,
audit logs and allow-lists read them), so the gateway drops them and states the peer
address it saw. Only a peer inside `--trusted-proxies` (a load balancer in front of the
gateway) has its forwarding headers kept, with its own address appended.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Forwarding headers a client may send; never passed on as they came from an untrusted peer.
FORWARDING = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip"}
)


def parse_trusted(spec: str | Iterable[str]) -> tuple[Network, ...]:
    """`10.0.0.0/8,192.168.1.7` → networks; a bad entry raises ValueError naming it."""
    items = spec.split(",") if isinstance(spec, str) else spec
    networks = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"trusted proxy {item!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)"
            ) from None
    return tuple(networks)


def is_trusted(peer: bytes, trusted: tuple[Network, ...]) -> bool:
    if not trusted:
        return False
    try:
        address = ipaddress.ip_address(peer.decode("ascii"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def _node(peer: bytes) -> bytes:
    return b'"[' + peer + b']"' if b":" in peer else peer  # RFC 7239: IPv6 quoted, bracketed


def edge_headers(peer: bytes) -> bytes:
    """The forwarding headers for every request of a connection from an untrusted peer."""
    return (
        b"x-forwarded-for: " + peer + b"\r\nx-real-ip: " + peer + b"\r\n"
        b"x-forwarded-proto: http\r\nforwarded: for=" + _node(peer) + b";proto=http\r\n"
    )


def proxied_headers(headers: list[tuple[bytes, bytes]], peer: bytes) -> bytes:
    """From a trusted proxy: its claims kept, its own address appended to the chains."""
    chain: list[bytes] = []
    forwarded: list[bytes] = []
    kept: dict[bytes, bytes] = {}
    for key, value in headers:
        if key == b"x-forwarded-for":
            chain.append(value)
        elif key == b"forwarded":
            forwarded.append(value)
        elif key in FORWARDING:
            kept.setdefault(key, value)
    chain.append(peer)
    forwarded.append(b"for=" + _node(peer))
    out = [
        b"x-forwarded-for: " + b", ".join(chain) + b"\r\n",
        b"x-real-ip: " + kept.get(b"x-real-ip", peer) + b"\r\n",
        b"x-forwarded-proto: " + kept.get(b"x-forwarded-proto", b"http") + b"\r\n",
        b"forwarded: " + b", ".join(forwarded) + b"\r\n",
    ]
    host = kept.get(b"x-forwarded-host")
    if host is not None:
        out.append(b"x-forwarded-host: " + host + b"\r\n")
    return b"".join(out)
