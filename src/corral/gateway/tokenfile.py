"""The gateway's control-plane token: from a private file, never left in the environment.

A token in the environment can be read by any process of the same user from
/proc/PID/environ and is inherited by every child, so `corral up` hands the gateway a
file (`--token-file`, or CORRAL_TOKEN_FILE naming it) that only its owner may read.
CORRAL_TOKEN and `--token` still work; CORRAL_TOKEN is removed from os.environ once read.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.secretfile import SecretFileError, read_secret_file

TOKEN_ENV = "CORRAL_TOKEN"
TOKEN_FILE_ENV = "CORRAL_TOKEN_FILE"


# One reader of private secret files for every corral process; the gateway's names kept.
TokenFileError = SecretFileError
read_token_file = read_secret_file


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
