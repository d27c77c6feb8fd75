"""Secrets handed to the CLI's daemons by file (see corral.secretfile), as CLI errors."""

from __future__ import annotations

from pathlib import Path

from corral.cli.output import CliError
from corral.secretfile import SecretFileError, write_secret_file
from corral.secretfile import read_secret_file as _read

__all__ = ["read_secret_file", "write_secret_file"]


def read_secret_file(path: Path, flag: str) -> str:
    """The secret in `path`, or one `error:` line naming the flag, the file and the fix."""
    try:
        return _read(path)
    except SecretFileError as exc:
        raise CliError(f"{flag}: {exc}", code=2) from None
