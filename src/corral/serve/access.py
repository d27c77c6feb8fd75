"""The access log of a corral.serve replica: one line per request, as the replica's log shows.

Two things uvicorn's own access log gets wrong behind corral's gateway:
- the readiness probe asks every second or faster, so the log is mostly `GET /health`;
  here a readiness answer is logged only when it differs from the last one (loading →
  ready → failed), which is what a reader wants to know;
- every request comes from the gateway, so the client is the gateway (or `127.0.0.1:0`
  after uvicorn's proxy-header rewrite); here it is the client the gateway names in
  X-Real-IP / X-Forwarded-For, believed only from a peer that is trusted: loopback (the
  gateway of `corral up`) or an address in FORWARDED_ALLOW_IPS (uvicorn's variable: the
  gateways' addresses, comma-separated, CIDRs allowed). Anyone else who reaches the
  replica's port directly could write anything in those headers.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Mapping

log = logging.getLogger("corral.serve.access")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(env: Mapping[str, str] = os.environ) -> tuple[Network, ...]:
    """Loopback and FORWARDED_ALLOW_IPS; entries that are not addresses are skipped."""
    networks: list[Network] = [
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    ]
    for item in env.get("FORWARDED_ALLOW_IPS", "").split(","):
        item = item.strip()
        if item == "*":
            networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return tuple(networks)


def _is_trusted(peer: str, trusted: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def client_of(
    peer: tuple[str, int] | None, headers: Mapping[str, str], trusted: tuple[Network, ...]
) -> str:
    """Who sent the request: the gateway's word for it from a trusted peer, else the peer."""
    if peer is None:
        return "-"
    host, port = peer
    if _is_trusted(host, trusted):
        named = headers.get("x-real-ip") or headers.get("x-forwarded-for", "").split(",")[-1]
        named = named.strip()
        if named:
            return named
    return f"{host}:{port}"


class AccessLog:
    """Logs requests; readiness answers only when they change."""

    def __init__(self, readiness_path: str, trusted: tuple[Network, ...] | None = None) -> None:
        self.readiness_path = readiness_path
        self.trusted = trusted_networks() if trusted is None else trusted
        self._last_readiness: int | None = None

    def request(
        self,
        peer: tuple[str, int] | None,
        headers: Mapping[str, str],
        method: str,
        path: str,
        version: str,
        status: int,
        started: float,
    ) -> None:
        if path == self.readiness_path and method == "GET":
            if status == self._last_readiness:
                return
            self._last_readiness = status
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info(
            '%s - "%s %s HTTP/%s" %d %.0f ms',
            client_of(peer, headers, self.trusted),
            method,
            path,
            version,
            status,
            elapsed_ms,
        )
