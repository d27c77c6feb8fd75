"""Which network interface a node's workloads should use for collectives.

gloo and NCCL pick an interface from the hostname by default; where hosts share a hostname
(containers, network namespaces) that resolves to 127.0.0.1 and a multi-host rendezvous
fails in a way that looks like the script's fault. The address the control plane knows the
node by is the one its peers dial (MASTER_ADDR), so its interface is the right one.
"""

from __future__ import annotations

import socket

import psutil

_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def interface_of(address: str) -> str | None:
    """The name of the interface that carries `address`, if any here does."""
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family in _FAMILIES and a.address.split("%")[0] == address:
                return name
    return None


def collective_env(address: str) -> dict[str, str]:
    """GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME for `address`'s interface (or nothing)."""
    name = interface_of(address)
    if name is None:
        return {}
    return {"GLOO_SOCKET_IFNAME": name, "NCCL_SOCKET_IFNAME": name}
