"""known_hosts for `corral node add` and `node remove`: OpenSSH's accept-new, by hand.

asyncssh checks a key against a known_hosts it is given, or checks nothing: accept-new
(trust a host seen for the first time, and pin its key) is reading the file first, then
recording what an unlisted host showed, so that the next connection (`node remove`, run as
root with sudo on that host) accepts only that key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncssh


def known_hosts_file(given: Path | None) -> Path:
    return given if given is not None else Path("~/.ssh/known_hosts").expanduser()


def pattern(host: str, port: int) -> str:
    """The host's name in known_hosts, as OpenSSH writes it."""
    return host if port == 22 else f"[{host}]:{port}"


def listed(path: Path, host: str, port: int) -> asyncssh.SSHKnownHosts | None:
    """`path`'s entries when they name host:port, else None (no file, or not listed).
    Raises OSError or ValueError when the file cannot be read."""
    import asyncssh

    if not path.exists():
        return None
    try:
        known = asyncssh.read_known_hosts(str(path))
    except asyncssh.Error as exc:
        raise ValueError(str(exc)) from None
    keys, cas, *_ = known.match(host, host, None if port == 22 else port)
    return known if keys or cas else None


def remember(path: Path, host: str, port: int, key: asyncssh.SSHKey) -> None:
    """Append host:port's key to `path` (made 0600, its directory 0700, when new)."""
    line = f"{pattern(host, port)} {key.export_public_key('openssh').decode().strip()}\n"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        line = "\n" + line
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(line)
