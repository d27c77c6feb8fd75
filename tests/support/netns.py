"""Several hosts on this one machine, for multi-host tests.

With network namespaces (root with CAP_SYS_ADMIN and CAP_NET_ADMIN):

```
 root namespace                                 one namespace per host
 bridge <tag>b  10.x.y.1/24 ─┬─ veth <tag>h0 ══ eth0 10.x.y.2   (host 0)
 (hosts.gateway: bind the    ├─ veth <tag>h1 ══ eth0 10.x.y.3   (host 1)
  control plane here)        └─ ...
```

A host's processes run inside its namespace (`ip netns exec`); each host has its own
loopback and reaches the others and the gateway only through the bridge, and nothing
beyond it (no default route). `link_down` sets the root end of the host's veth down: its
packets vanish as with a pulled cable — no reset, connections just stall — while its
processes keep running. `kill` kills every process in the namespace.

Without them (`netns_available()` says why), `make_hosts` falls back to loopback hosts:
host i is 127.a.b.(i+2), the gateway 127.0.0.1. Processes are found by an environment
marker that their children inherit (the agent's shims and workloads included); `link_down`
freezes them (SIGSTOP) — their peers see the same silence as with a cut link — and
`link_up` thaws them. Processes started while a loopback host is "down" are frozen too.

Everything is removed on close, at exit, and (namespaces and bridges of dead test runs)
on the next start.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from itertools import count
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import psutil

MARKER = "NETNS_HARNESS_HOST"  # not CORRAL_*: the agent strips those from its workloads
IFNAMSIZ = 15
_TAG = re.compile(r"^crl([0-9a-f]+)x[0-9a-f]+")
_sequence = count()
Kind = Literal["netns", "loopback"]
Stream = int | IO[bytes] | None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def netns_available() -> tuple[bool, str]:
    """Whether network namespaces with veth pairs can be made here, and if not, why."""
    name = f"crl{os.getpid():x}xprobe"
    try:
        created = _ip("netns", "add", name, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"cannot run `ip`: {exc}"
    if created.returncode != 0:
        return False, f"`ip netns add` failed: {created.stderr.strip()}"
    try:
        end, peer = f"{name[:12]}v", f"{name[:12]}p"
        veth = _ip("link", "add", end, "type", "veth", "peer", "name", peer, check=False)
        if veth.returncode != 0:
            return False, f"`ip link add type veth` failed: {veth.stderr.strip()}"
        _ip("link", "del", end, check=False)
        return True, "network namespaces work"
    finally:
        _ip("netns", "del", name, check=False)


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no address or route of this machine touches."""
    taken: list[ipaddress.IPv4Network] = []
    for args in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
        for word in _ip(*args, check=False).stdout.split():
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.IPv4Network(word, strict=False))
    first = os.getpid() % 256
    for k in range(256):
        net = ipaddress.IPv4Network(f"10.213.{(first + k) % 256}.0/24")
        if not any(net.overlaps(t) for t in taken if t.prefixlen > 0):
            return net
    raise RuntimeError("no free /24 in 10.213.0.0/16")


def cleanup_stale() -> None:
    """Remove namespaces and bridges left by test runs that died without cleaning up."""

    def dead(name: str) -> bool:
        m = _TAG.match(name)
        return m is not None and not psutil.pid_exists(int(m.group(1), 16))

    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if dead(name):
            _kill_pids(_netns_pids(name))
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1 and dead(parts[1].strip()):
            _ip("link", "del", parts[1].strip(), check=False)


class Host:
    def __init__(self, hosts: Hosts, index: int, name: str, address: str) -> None:
        self._hosts = hosts
        self.index = index
        self.name = name
        self.address = address
        self.marker = f"{hosts.tag}-{name}"
        self.netns = f"{hosts.tag}-{name}"
        self.veth = f"{hosts.tag}h{index}"
        self.down = False

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` as run on this host."""
        if self._hosts.kind == "netns":
            return ["ip", "netns", "exec", self.netns, *argv]
        return list(argv)

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stdout: Stream = None,
        stderr: Stream = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` on this host, in a process group of its own."""
        full_env = dict(os.environ if env is None else env)
        full_env[MARKER] = self.marker
        proc = subprocess.Popen(
            self.command(argv),
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        if self.down and self._hosts.kind == "loopback":
            _signal(proc.pid, signal.SIGSTOP)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, MARKER: self.marker}
        return subprocess.run(
            self.command(argv), env=env, capture_output=True, text=True, timeout=timeout
        )

    def pids(self) -> list[int]:
        """Every process running on this host now."""
        marked = _marked_pids(self.marker)
        if self._hosts.kind == "netns":
            return sorted(set(marked) | set(_netns_pids(self.netns)))
        return marked

    def link_down(self) -> None:
        self.down = True
        if self._hosts.kind == "netns":
            _ip("link", "set", self.veth, "down")
        else:
            for pid in self.pids():
                _signal(pid, signal.SIGSTOP)

    def link_up(self) -> None:
        self.down = False
        if self._hosts.kind == "netns":
            _ip("link", "set", self.veth, "up")
        else:
            for pid in self.pids():
                _signal(pid, signal.SIGCONT)

    def kill(self) -> None:
        """Every process of the host dies at once, as in a power cut."""
        _kill_pids(self.pids())

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address}, {self._hosts.kind})"


class Hosts:
    """`count` hosts; use as a context manager (it also cleans up at interpreter exit)."""

    def __init__(
        self,
        n: int,
        kind: Kind,
        *,
        subnet: ipaddress.IPv4Network | str | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not 1 <= n <= 200:
            raise ValueError("between 1 and 200 hosts")
        self.kind = kind
        self.tag = f"crl{os.getpid():x}x{next(_sequence):x}"
        if len(f"{self.tag}h{n - 1}") > IFNAMSIZ:
            raise ValueError(f"interface names from tag {self.tag!r} would be too long")
        self.bridge = f"{self.tag}b"
        names = list(names or [f"h{i}" for i in range(n)])
        if kind == "netns":
            net = ipaddress.IPv4Network(subnet) if subnet is not None else free_subnet()
            if net.prefixlen != 24:
                raise ValueError(f"subnet {net} is not a /24")
            hosts = list(net.hosts())
            self.subnet: ipaddress.IPv4Network | None = net
            self.gateway = str(hosts[0])
            addresses = [str(hosts[i + 1]) for i in range(n)]
        else:
            self.subnet = None
            self.gateway = "127.0.0.1"
            pid = os.getpid()
            addresses = [f"127.{100 + pid % 100}.{pid // 100 % 256}.{i + 2}" for i in range(n)]
        self.hosts = [
            Host(self, i, n, a) for i, (n, a) in enumerate(zip(names, addresses, strict=True))
        ]
        self._closed = False
        atexit.register(self.close)
        if kind == "netns":
            try:
                self._create()
            except BaseException:
                self.close()
                raise

    def _create(self) -> None:
        assert self.subnet is not None
        cleanup_stale()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for h in self.hosts:
            peer = f"{self.tag}p{h.index}"
            _ip("netns", "add", h.netns)
            _ip("link", "add", h.veth, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", h.netns)
            _ip("-n", h.netns, "link", "set", peer, "name", "eth0")
            _ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0")
            _ip("-n", h.netns, "link", "set", "eth0", "up")
            _ip("-n", h.netns, "link", "set", "lo", "up")
            _ip("link", "set", h.veth, "master", self.bridge)
            _ip("link", "set", h.veth, "up")

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __enter__(self) -> Hosts:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill every host's processes and remove what was made. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for h in self.hosts:
            h.kill()
        if self.kind == "netns":
            for h in self.hosts:
                _ip("netns", "del", h.netns, check=False)  # takes its veth pair along
            _ip("link", "del", self.bridge, check=False)
        atexit.unregister(self.close)


def make_hosts(
    n: int,
    *,
    subnet: ipaddress.IPv4Network | str | None = None,
    names: Sequence[str] | None = None,
    kind: Kind | None = None,
) -> Hosts:
    """Network-namespace hosts where this machine allows, else loopback hosts (with a
    warning that says why, so that a fallback is never silent)."""
    if kind is None:
        ok, why = netns_available()
        kind = "netns" if ok else "loopback"
        if not ok:
            warnings.warn(
                f"network namespaces unavailable ({why}); hosts are loopback addresses",
                stacklevel=2,
            )
    return Hosts(n, kind, subnet=subnet, names=names)


def _netns_pids(name: str) -> list[int]:
    result = _ip("netns", "pids", name, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def _marked_pids(marker: str) -> list[int]:
    pids = []
    needle = f"{MARKER}={marker}\0".encode()
    for pid in psutil.pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"\0" + needle in b"\0" + environ:
            pids.append(pid)
    return pids


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _kill_pids(pids: Sequence[int]) -> None:
    own = os.getpid()
    for pid in pids:
        if pid != own:
            _signal(pid, signal.SIGKILL)
    # Wait until each is gone or a zombie, without reaping: a test's Popen still does that.
    deadline = time.monotonic() + 10
    for pid in pids:
        while pid != own and time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
