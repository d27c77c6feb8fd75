"""Secrets handed to a process in a private file. Standard library only.

A secret in a process's environment is readable by every process of the same user from
/proc/PID/environ, for the process's whole life, and is inherited by every child; one on
the command line is shown by `ps` to everyone. corral's processes take their tokens from
files that only their owner may read, checked here on the file actually opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_BYTES = 64 * 1024


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message is one line for a person."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def read_private_file(path: Path, what: str, *, follow: bool = True) -> bytes:
    """The first MAX_BYTES of `path`, a regular file of mode 0600 or stricter (checked on
    the file actually opened, not on whatever the path names later). `follow=False`
    refuses a symlink in its last component."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SecretFileError(
            f"cannot read {what} {path}: {exc.strerror or exc}",
            missing=isinstance(exc, FileNotFoundError),
        ) from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SecretFileError(f"{what} {path} is not a regular file")
        if mode & 0o077:
            raise SecretFileError(
                f"{what} {path} is open to group or others (mode "
                f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
            )
        return file.read(MAX_BYTES)


def read_secret_file(path: Path, what: str = "token file") -> str:
    """The one-line secret in `path` (see read_private_file)."""
    secret = read_private_file(path, what).decode("utf-8", "replace").strip()
    if not secret or "\n" in secret:
        raise SecretFileError(f"{what} {path} must hold one secret on one line")
    return secret


def write_secret_file(path: Path, secret: str) -> None:
    """Create or replace `path` with `secret`, 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
