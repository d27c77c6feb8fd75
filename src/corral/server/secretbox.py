"""Workspace secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256, authenticated) under a
key kept in a 0600 file, never in the database.

Every API server of one control plane must read the same key file: a value one encrypts
another decrypts when it builds a node's desired set. The file holds one key per line; the
first encrypts and every line decrypts, so a key is rotated by putting a new one first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from corral.secretfile import SecretFileError, read_private_file
from corral.server.config import SettingError

KEY_FILE_ENV = "CORRAL_SECRETS_KEY_FILE"


class SecretKeyError(SettingError):
    """The key file is unusable; the message says which file and why."""


class SecretDecryptError(ValueError):
    """A stored value does not open with this server's keys (another key file?)."""


def key_path(home: Path, env: Mapping[str, str] = os.environ) -> tuple[Path, bool]:
    """Where the key lives, and whether it may be created there: a file named by
    CORRAL_SECRETS_KEY_FILE must exist (servers that share it must not each make their
    own); the default, <home>/secrets/secrets.key, is made on first start."""
    named = env.get(KEY_FILE_ENV)
    if named:
        return Path(named), False
    return home / "secrets" / "secrets.key", True


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no key")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def generate(cls) -> SecretBox:
        return cls([Fernet.generate_key()])

    @classmethod
    def from_settings(cls, home: Path, env: Mapping[str, str] = os.environ) -> SecretBox:
        path, create = key_path(home, env)
        return cls.load_or_create(path) if create else cls.load(path)

    @classmethod
    def load_or_create(cls, path: Path) -> SecretBox:
        """The key in `path`, made (0600, its directory 0700) if there is none yet."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.parent.chmod(0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                pass  # another server on this home made it a moment ago: use theirs
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(Fernet.generate_key() + b"\n")
                    out.flush()
                    os.fsync(out.fileno())
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> SecretBox:
        where = f"secrets key file {path}"
        try:
            data = read_private_file(path, "secrets key file", follow=False)
        except SecretFileError as exc:
            hint = f" (set {KEY_FILE_ENV} to an existing file)" if exc.missing else ""
            raise SecretKeyError(f"{exc}{hint}") from None
        lines = [line.strip() for line in data.splitlines() if line.strip()]
        if not lines:
            raise SecretKeyError(f"{where}: the file is empty")
        try:
            return cls(lines)
        except (ValueError, TypeError):
            raise SecretKeyError(
                f"{where}: not a Fernet key (one url-safe base64 key of 32 bytes a line)"
            ) from None

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeEncodeError):
            raise SecretDecryptError(
                "a stored secret does not decrypt with this server's key: do all servers "
                f"read the same key file ({KEY_FILE_ENV})?"
            ) from None
