"""A throwaway PostgreSQL server for the store tests, from Debian's postgresql package."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "PostgreSQL is not installed: `apt-get install postgresql` (the store tests run "
        "against SQLite and PostgreSQL; .ci/run installs it)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def temporary_postgres() -> Iterator[str]:
    """Start a private cluster on 127.0.0.1 and yield its SQLAlchemy URL; remove it after."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="corral-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root; Debian's package creates the postgres user.
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = lambda *args: subprocess.run(  # noqa: E731
        [*as_user, *args], check=True, capture_output=True, text=True
    )
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "corral", "--auth=trust", "-E", "UTF8")
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-t",
            "30",
            "-l",
            str(root / "log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off",
            "start",
        )
        yield f"postgresql+psycopg://corral@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
