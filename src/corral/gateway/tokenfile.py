"""The gateway's control-plane token: from a private file, never left in the environment.

A token in the environment can be read by any process of the same user from
/proc/PID/environ and is inherited by every child, so `corral up` hands the gateway a
file (`--token-file`, or CORRAL_TOKEN_FILE naming it) that only its owner may read.
CORRAL_TOKEN and `--token` still work; CORRAL_TOKEN is removed from os.environ once read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

TOKEN_ENV = "CORRAL_TOKEN"
TOKEN_FILE_ENV = "CORRAL_TOKEN_FILE"


class TokenFileError(ValueError):
    """A token file that cannot be used; the message is one line for a person."""


def read_token_file(path: Path) -> str:
    """The token in `path`, which must be a regular file of mode 0600 or stricter."""
    try:
        with path.open("rb") as file:
            # The mode of the file actually opened, not of whatever the path names later.
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise TokenFileError(f"token file {path} is not a regular file")
            if mode & 0o077:
                raise TokenFileError(
                    f"token file {path} is open to group or others (mode "
                    f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
                )
            data = file.read(64 * 1024)
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from None
    token = data.decode("utf-8", "replace").strip()
    if not token or "\n" in token:
        raise TokenFileError(f"token file {path} must hold one token on one line")
    return token


def take_env_token() -> str | None:
    """CORRAL_TOKEN, removed from this process's environment so no child inherits it."""
    return os.environ.pop(TOKEN_ENV, None) or None


def resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """`--token`, else `--token-file`, else CORRAL_TOKEN_FILE's file, else CORRAL_TOKEN."""
    from_env = take_env_token()
    if token and token_file is not None:
        raise TokenFileError("give --token or --token-file, not both")
    if token:
        return token
    if token_file is None and os.environ.get(TOKEN_FILE_ENV):
        token_file = Path(os.environ[TOKEN_FILE_ENV])
    if token_file is not None:
        return read_token_file(token_file)
    return from_env
