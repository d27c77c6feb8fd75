"""Secrets handed to a process by file: never on argv (`ps`) nor in an environment that
children inherit and that `/proc/PID/environ` shows to every process of the same user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from corral.cli.output import CliError


def read_secret_file(path: Path, flag: str) -> str:
    """The secret in `path` (first line), refusing a file others may read."""
    try:
        st = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{flag} {path}: {exc.strerror or exc}", code=2) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(
            f"{flag} {path}: readable by others (mode {stat.S_IMODE(st.st_mode):04o})",
            code=2,
            hint=f"chmod 600 {path}",
        )
    secret = text.strip().splitlines()[0] if text.strip() else ""
    if not secret:
        raise CliError(f"{flag} {path}: the file is empty", code=2)
    return secret


def write_secret_file(path: Path, secret: str) -> None:
    """Create or replace `path` with `secret`, 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
