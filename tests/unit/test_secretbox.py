"""SecretBox: the key file's rules, and values that only its key opens."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from corral.server.config import SettingError
from corral.server.secretbox import (
    KEY_FILE_ENV,
    SecretBox,
    SecretDecryptError,
    SecretKeyError,
    key_path,
)


def test_first_start_makes_a_0600_key_in_a_0700_directory_and_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "home" / "secrets" / "secrets.key"
    box = SecretBox.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = box.encrypt("hf_abc")
    assert "hf_abc" not in token
    # A second start (or a second server sharing the file) opens what the first sealed.
    assert SecretBox.load_or_create(path).decrypt(token) == "hf_abc"


def test_a_key_file_others_may_read_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    path.write_bytes(Fernet.generate_key())
    path.chmod(0o640)
    with pytest.raises(SecretKeyError, match=r"secrets\.key.*0640.*chmod 600"):
        SecretBox.load(path)
    with pytest.raises(SettingError):  # what `corral server` reports as a setting error
        SecretBox.load_or_create(path)


@pytest.mark.parametrize("content", [b"", b"not a key\n"])
def test_an_empty_or_malformed_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secrets.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(SecretKeyError, match=r"secrets\.key"):
        SecretBox.load(path)


def test_a_named_key_file_must_exist_and_is_never_created(tmp_path: Path) -> None:
    named = tmp_path / "shared.key"
    path, create = key_path(tmp_path, {KEY_FILE_ENV: str(named)})
    assert (path, create) == (named, False)
    with pytest.raises(SecretKeyError, match=KEY_FILE_ENV):
        SecretBox.from_settings(tmp_path, {KEY_FILE_ENV: str(named)})
    assert not named.exists()
    assert key_path(tmp_path, {}) == (tmp_path / "secrets" / "secrets.key", True)


def test_another_key_cannot_open_a_value_and_a_rotated_file_still_can(tmp_path: Path) -> None:
    old_key = Fernet.generate_key()
    token = SecretBox([old_key]).encrypt("v")
    with pytest.raises(SecretDecryptError, match=KEY_FILE_ENV):
        SecretBox.generate().decrypt(token)
    with pytest.raises(SecretDecryptError):
        SecretBox([old_key]).decrypt(token[:-6] + "AAAAAA")  # authenticated, not only secret
    # Rotation: the new key first (it seals), the old one after (it still opens).
    new_key = Fernet.generate_key()
    path = tmp_path / "secrets.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, new_key + b"\n" + old_key + b"\n")
    os.close(fd)
    rotated = SecretBox.load(path)
    assert rotated.decrypt(token) == "v"
    assert SecretBox([new_key]).decrypt(rotated.encrypt("w")) == "w"
