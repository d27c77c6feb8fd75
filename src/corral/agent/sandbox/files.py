"""Creating and writing files where a workload may have planted symlinks. Standard library only.

Every path below a directory a workload can write is opened one component at a time with
O_NOFOLLOW (openat semantics), so a symlink planted by a previous job never redirects a
write, a chown or a read of the agent's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_READ = 1 << 16


class UnsafePath(OSError):
    """A component of a path is a symlink or not a directory where one is required."""


def make_dir_at(parent: int, name: str, mode: int) -> bool:
    """Create directory `name` of the open directory `parent`; False if it was there."""
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:
        return False
    return True


def open_dir_at(parent: int, name: str) -> int:
    """Directory `name` of the open directory `parent`, opened never through a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(exc.errno, f"{name!r} is a symlink or not a directory") from None
        raise


def _open_dir_at(parent: int, name: str, mode: int, *, create: bool) -> int:
    if create:
        make_dir_at(parent, name, mode)
    return open_dir_at(parent, name)


@contextlib.contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def ensure_owned_dir(path: Path, uid: int, gid: int, mode: int = 0o700) -> None:
    """Make `path` a directory owned by uid:gid with `mode`. Its parent must exist and be
    trusted (writable by root only); the directory itself is never followed if a symlink."""
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with _fd(parent), _fd(_open_dir_at(parent, path.name, mode, create=True)) as fd:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)


def makedirs_nofollow(root: int, relative: PurePosixPath, mode: int = 0o755) -> int:
    """Walk (creating) `relative` below the open directory `root`; return the last one's fd."""
    fd = os.dup(root)
    for part in relative.parts:
        try:
            nxt = _open_dir_at(fd, part, mode, create=True)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """Write each relative path -> text below `directory` without following any symlink."""
    root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with _fd(root):
        for name, content in files.items():
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise ValueError(f"file {name!r} must be a relative path inside the working dir")
            mode = 0o755 if content.startswith("#!") else 0o644
            with _fd(makedirs_nofollow(root, relative.parent)) as parent:
                fd = _open_regular_for_writing(parent, relative.name, mode, name)
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(content)
                    # A script shipped with its shebang is meant to be run, whatever umask.
                    os.fchmod(out.fileno(), mode)


def _open_regular_for_writing(parent: int, leaf: str, mode: int, name: str) -> int:
    # Non-blocking: a FIFO planted under the name would otherwise hang the open forever.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(leaf, flags, mode, dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(exc.errno, f"file {name!r} is a symlink") from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader
            raise UnsafePath(exc.errno, f"file {name!r} is not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(errno.EINVAL, f"file {name!r} is not a regular file")
    os.set_blocking(fd, True)
    os.ftruncate(fd, 0)
    return fd


def read_small_nofollow(path: Path, limit: int = MAX_READ) -> bytes | None:
    """A regular file's first `limit` bytes, or None if missing. Never follows a symlink in
    the last component, never blocks on a FIFO, and never reads more than `limit`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(exc.errno, f"{path} is a symlink") from None
        raise
    with _fd(fd):
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(errno.EINVAL, f"{path} is not a regular file")
        return os.read(fd, limit)
