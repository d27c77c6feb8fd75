"""What one spec may carry, checked the same way for jobs and endpoints.

A spec travels to every node its replicas run on, inside the agent channel's messages,
and is stored with every job: it must stay small. Code and data travel as artifacts (a
synced working directory, volumes); `files:` is for a few small files.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationInfo

# Parse a spec the server stored, or sent back in a view, with this context: it passed the
# checks in force when it was submitted, and tightening them later must not make it
# unreadable (a job or endpoint nobody can list, fix or delete; a controller failing on
# it every round). What is unsafe in it is refused where it would act: the node writes
# `files:` only as relative paths inside the working directory, never through a symlink
# (agent/sandbox/files.py), and a replica that names another path fails with that reason.
STORED: dict[str, Any] = {"stored": True}

MAX_FILES = 64
MAX_FILE_PATH = 255
MAX_FILES_BYTES = 256 * 1024  # all of a spec's `files:` together
MAX_ENV_VARS = 256
MAX_ENV_BYTES = 64 * 1024  # all names and values together
MAX_COMMAND_BYTES = 64 * 1024  # command, or entrypoint + args
MAX_ARGS = 4096
MAX_SELECTOR_LABELS = 64
MAX_LABEL_BYTES = 253

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _kib(n: int) -> str:
    return f"{n // 1024} KiB"


def bounded(info: ValidationInfo) -> bool:
    """Whether size bounds apply: to new input, not to a spec read back from the store."""
    return not (isinstance(info.context, dict) and info.context.get("stored"))


def check_env(value: dict[str, str], bounded: bool = True) -> dict[str, str]:
    if bounded and len(value) > MAX_ENV_VARS:
        raise ValueError(f"{len(value)} variables; at most {MAX_ENV_VARS}")
    total = 0
    for key, item in value.items():
        if not _ENV_KEY.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name")
        if "\0" in item:
            raise ValueError(f"{key}: a value cannot contain a NUL character")
        total += _size(key) + _size(item)
    if bounded and total > MAX_ENV_BYTES:
        raise ValueError(
            f"{_kib(total)} of names and values; at most {_kib(MAX_ENV_BYTES)} "
            "(put large settings in a file)"
        )
    return value


def check_files(value: dict[str, str], bounded: bool = True) -> dict[str, str]:
    """Relative paths inside the working directory, few and small."""
    if bounded and len(value) > MAX_FILES:
        raise ValueError(
            f"{len(value)} files; at most {MAX_FILES} (files: is for a few small files)"
        )
    total = 0
    for path, content in value.items():
        parts = path.split("/")
        unsafe = not path or path.startswith("/") or ".." in parts or "\0" in path
        if bounded and unsafe:
            raise ValueError(f"{path!r} must be a relative path inside the working directory")
        if bounded and len(path) > MAX_FILE_PATH:
            raise ValueError(f"{path[:40]!r}…: a path of at most {MAX_FILE_PATH} characters")
        total += _size(content)
    if bounded and total > MAX_FILES_BYTES:
        raise ValueError(
            f"{_kib(total)} in files; at most {_kib(MAX_FILES_BYTES)} in all "
            "(files: is for small files, such as a script or a config)"
        )
    return value


def check_argv(words: list[str], what: str, bounded: bool = True) -> list[str]:
    if bounded and len(words) > MAX_ARGS:
        raise ValueError(f"{what}: {len(words)} words; at most {MAX_ARGS}")
    if bounded and sum(_size(w) for w in words) > MAX_COMMAND_BYTES:
        raise ValueError(f"{what}: longer than {_kib(MAX_COMMAND_BYTES)}")
    if any("\0" in w for w in words):
        raise ValueError(f"{what}: a NUL character cannot be passed to a program")
    return words


def check_command(value: str | None, bounded: bool = True) -> str | None:
    if value is not None:
        check_argv([value], "command", bounded)
    return value


def check_selector(value: dict[str, str], bounded: bool = True) -> dict[str, str]:
    if not bounded:
        return value
    if len(value) > MAX_SELECTOR_LABELS:
        raise ValueError(f"{len(value)} labels; at most {MAX_SELECTOR_LABELS}")
    for key, item in value.items():
        if len(key) > MAX_LABEL_BYTES or len(item) > MAX_LABEL_BYTES:
            raise ValueError(f"label {key[:40]!r}: keys and values are at most 253 characters")
    return value
