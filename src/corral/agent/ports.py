"""The node's listening TCP sockets, as the kernel sees them. Linux only.

`listeners()` asks the kernel through sock_diag netlink for LISTEN sockets alone (what
`ss -lt` does): its cost does not grow with a busy server's thousands of connections, as
reading /proc/net/tcp would. Where netlink is refused (an old kernel, a seccomp profile),
it falls back to parsing /proc/net/tcp and /proc/net/tcp6. Either way each listener comes
with its socket inode (to tell whose it is: procs.py) and its owner's uid.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("corral.agent.ports")

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_LISTEN = 10
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_REQUEST = struct.Struct("=BBBxI48x")  # inet_diag_req_v2: family, protocol, ext, states, id
_MESSAGE_LEN = 72  # inet_diag_msg: family, state, timer, retrans, id (48), 5 x u32
_PROC_NET = Path("/proc/net")

# Addresses whose listener takes a connection to 127.0.0.1 (the probe's): loopback itself
# and the wildcards (an IPv6 wildcard takes IPv4 too unless IPV6_V6ONLY, which /proc and
# sock_diag do not show: counted, to be safe).
_LOOPBACK_ANSWERING = frozenset(
    {"127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0"}
)


@dataclass(frozen=True)
class Listener:
    port: int
    address: str
    inode: int
    uid: int

    @property
    def answers_loopback(self) -> bool:
        """Whether a connection to 127.0.0.1:port may reach this socket."""
        return self.address in _LOOPBACK_ANSWERING


def listeners() -> list[Listener]:
    """Every listening TCP socket of this network namespace. Raises OSError where neither
    sock_diag nor /proc/net/tcp can be read (not Linux)."""
    try:
        return _diag(socket.AF_INET) + _diag(socket.AF_INET6)
    except (OSError, AttributeError) as exc:  # AttributeError: no AF_NETLINK here
        log.debug("sock_diag unavailable (%s): reading /proc/net/tcp", exc)
    found = parse_proc_net((_PROC_NET / "tcp").read_text("ascii", errors="replace"), v6=False)
    try:
        text = (_PROC_NET / "tcp6").read_text("ascii", errors="replace")
    except OSError:
        return found  # no IPv6 on this host
    return found + parse_proc_net(text, v6=True)


def on_port(port: int, found: Iterable[Listener] | None = None) -> list[Listener]:
    """The listeners on `port`, on any address."""
    return [x for x in (listeners() if found is None else found) if x.port == port]


def listening_ports(found: Iterable[Listener] | None = None) -> list[int]:
    """The ports something listens on, sorted, each once."""
    return sorted({x.port for x in (listeners() if found is None else found)})


def parse_proc_net(text: str, *, v6: bool) -> list[Listener]:
    """The LISTEN entries of /proc/net/tcp (or tcp6, `v6`). Pure."""
    found: list[Listener] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":  # 0A: TCP_LISTEN
            continue
        address, _, port = fields[1].partition(":")
        try:
            raw = bytes.fromhex(address)
            # Each 32-bit word is printed as a number in the host's byte order.
            words = raw
            if sys.byteorder == "little":
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            family = socket.AF_INET6 if v6 else socket.AF_INET
            found.append(
                Listener(
                    port=int(port, 16),
                    address=socket.inet_ntop(family, words),
                    inode=int(fields[9]),
                    uid=int(fields[7]),
                )
            )
        except ValueError:
            continue
    return found


def _diag(family: int) -> list[Listener]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 1 << _TCP_LISTEN)
        header = _HEADER.pack(
            _HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
        )
        nl.sendall(header + body)
        found: list[Listener] = []
        while True:
            data = nl.recv(1 << 16)
            if not data:
                return found
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    return found
                payload = data[offset + _HEADER.size : offset + length]
                offset += (length + 3) & ~3
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    raise OSError(code, os.strerror(code) if code else "sock_diag error")
                if kind == _SOCK_DIAG_BY_FAMILY and len(payload) >= _MESSAGE_LEN:
                    found.append(_listener(payload))


def _listener(payload: bytes) -> Listener:
    family = payload[0]
    port = struct.unpack_from(">H", payload, 4)[0]
    src = payload[8:24] if family == socket.AF_INET6 else payload[8:12]
    uid, inode = struct.unpack_from("=II", payload, 64)
    return Listener(port=port, address=socket.inet_ntop(family, src), inode=inode, uid=uid)
