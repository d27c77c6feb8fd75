"""Copying an uploaded working directory from the node's cache into a replica's working
directory, as root, without ever following a link. Standard library only: the shim runs it.

The runner fetches the tree into the node cache (artifacts.py) and writes `<rid>/workdir.json`
(`CodePlan`): the cached manifest, the cache's blob directory, and the wheel index the
environment build may use. The shim then calls `materialize` before the sandbox starts:

- directories are walked one component at a time with O_NOFOLLOW (sandbox/files.py), made
  0755 and handed to the workspace's uid; a symlink or a file where the tree wants a
  directory is refused (`a/../x` cannot occur: every path is checked first);
- files are created O_EXCL | O_NOFOLLOW, filled from the cached blobs by copy_file_range
  (sendfile where the kernel refuses), given the entry's mode and the workspace's uid;
- symlinks are made as given: the tree is the user's own, and nothing here follows them.

`keep_existing=True` is for a pod's persistent working directory: whatever already exists
there (a file the user edited, or a link they put in place of a directory) is left as it
is, and the tree fills in only what is missing.

`links` (a confined replica's own working directory): rather than a copy per replica, each
file is a hard link to a root-owned, read-only file of the node's per-workspace link store
(`<cache>/links/<workspace>/`), made once per node from the blobs. A 1 GB tree then starts
its second replica, and a re-submit after a one-file change, by making links, not copying
a gigabyte. The replica may read those files, and replace or delete them (the directories
are its own), but not change one in place: it is root's, mode 0644/0755. The store is per
workspace, so a file's link count never tells one workspace that another has the same
bytes. A pod's directory (which its user edits) and an unconfined replica (whose user
could write a shared file in place) get copies.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.agent.layout import read_json, write_json_atomic
from corral.agent.sandbox.files import UnsafePath, make_dir_at, open_dir_at

WORKDIR = "workdir.json"  # <rid>/workdir.json, written by the runner for the shim
CHUNK_BYTES = 4 * 1024 * 1024  # wire/artifacts.py's (that module needs pydantic)
MAX_PATH_BYTES = 4096
MAX_DEPTH = 255  # the walk holds one descriptor per level
_HEX = re.compile(r"^[0-9a-f]{64}$")
_MODES = (0o644, 0o755)
_DIR_MODE = 0o755


class WorkdirError(ValueError):
    """The tree cannot be put in place: the message names the path and why."""


@dataclass(frozen=True)
class CodePlan:
    """What the runner prepared for the shim (`workdir.json`)."""

    manifest: str | None = None  # the cached manifest of the working directory
    blobs: str | None = None  # the cache's blob directory
    digest: str | None = None
    index_url: str | None = None  # the control plane's wheel index, when it serves one
    links: str | None = None  # the workspace's link store on this node (module docstring)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "blobs": self.blobs,
            "digest": self.digest,
            "index_url": self.index_url,
            "links": self.links,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CodePlan:
        def text(key: str) -> str | None:
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{WORKDIR}: {key} is not a string")
            return value

        return cls(
            text("manifest"), text("blobs"), text("digest"), text("index_url"), text("links")
        )

    def save(self, replica_dir: Path) -> None:
        write_json_atomic(replica_dir / WORKDIR, self.to_json())


def load_code_plan(replica_dir: Path) -> CodePlan | None:
    data = read_json(replica_dir / WORKDIR)
    return None if data is None else CodePlan.from_json(data)


@dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]
    mode: int
    size: int
    chunks: tuple[str, ...]
    link: str | None


@dataclass
class Stats:
    files: int = 0
    links: int = 0
    bytes: int = 0
    linked: int = 0  # files that are links to the read-only store
    kept: list[str] = field(default_factory=list)  # paths left as they were (keep_existing)


def blob_path(blobs: Path, digest: str) -> Path:
    return blobs / digest[:2] / digest


def parse_manifest(raw: bytes) -> list[Entry]:
    """The manifest's entries, every path checked again: the shim trusts nothing it did not
    check itself, even from the root-only cache."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise WorkdirError(f"the cached manifest is not JSON: {exc}") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise WorkdirError("the cached manifest has no list of files")
    entries = [_entry(item) for item in files]
    paths = [e.path for e in entries]
    if len(set(paths)) != len(paths):
        raise WorkdirError("the manifest names a path twice")
    # Sorted as the manifest requires: a directory's entries are then contiguous, which the
    # walk below relies on to keep only one chain of directories open.
    return sorted(entries, key=lambda e: "/".join(e.path))


def _entry(item: object) -> Entry:
    if not isinstance(item, dict):
        raise WorkdirError("a manifest entry is not an object")
    path = item.get("path")
    if not isinstance(path, str) or len(path.encode()) > MAX_PATH_BYTES:
        raise WorkdirError("a manifest entry has no usable path")
    parts = tuple(path.split("/"))
    if path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise WorkdirError(f"{path!r}: not a relative path inside the working directory")
    if len(parts) > MAX_DEPTH:
        raise WorkdirError(f"{path[:80]!r}…: deeper than {MAX_DEPTH} directories")
    mode, size = item.get("mode", 0o644), item.get("size", 0)
    chunks, link = item.get("chunks") or [], item.get("link")
    if mode not in _MODES or not isinstance(size, int) or size < 0:
        raise WorkdirError(f"{path!r}: mode or size out of range")
    if not isinstance(chunks, list) or not all(
        isinstance(c, str) and _HEX.match(c) for c in chunks
    ):
        raise WorkdirError(f"{path!r}: chunks are not SHA-256 digests")
    if link is not None and (not isinstance(link, str) or not link or "\0" in link):
        raise WorkdirError(f"{path!r}: not a usable link target")
    if link is None and len(chunks) != -(-size // CHUNK_BYTES):
        raise WorkdirError(f"{path!r}: {len(chunks)} chunks for {size} bytes")
    return Entry(parts, mode, size, tuple(chunks), link)


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and bool(_HEX.match(value))


def materialize(
    manifest: Path,
    blobs: Path,
    target: int,
    *,
    uid: int | None = None,
    gid: int | None = None,
    keep_existing: bool = False,
    links: Path | None = None,
) -> Stats:
    """Write the tree of `manifest` (from the cache's `blobs`) below the open directory
    `target`. Created directories and files get `uid:gid` when given (as root); with
    `links`, files are hard links to read-only files of that store instead (docstring).
    Raises WorkdirError naming the path that could not be written."""
    entries = parse_manifest(manifest.read_bytes())
    stats = Stats()
    walk = _Walk(target, uid, gid, keep_existing)
    try:
        for entry in entries:
            name = "/".join(entry.path)
            try:
                parent = walk.to(entry.path[:-1])
                if parent is None:
                    stats.kept.append(name)  # below something the user put in its place
                    continue
                if entry.link is not None:
                    if _make_link(parent, entry.path[-1], entry.link, keep_existing):
                        stats.links += 1
                    else:
                        stats.kept.append(name)
                elif links is not None and _link_file(parent, entry, blobs, links):
                    stats.files += 1
                    stats.bytes += entry.size
                    stats.linked += 1
                elif _make_file(parent, entry, blobs, uid, gid, keep_existing):
                    stats.files += 1
                    stats.bytes += entry.size
                else:
                    stats.kept.append(name)
            except UnsafePath as exc:
                raise WorkdirError(f"{name}: {exc.strerror}") from None
            except OSError as exc:
                raise WorkdirError(f"{name}: {exc.strerror or exc}") from None
    finally:
        walk.close()
    return stats


class _Walk:
    """The chain of directories open from `target` down to the current entry's parent."""

    def __init__(self, target: int, uid: int | None, gid: int | None, keep: bool) -> None:
        self.uid, self.gid, self.keep = uid, gid, keep
        self.parts: list[str] = []
        self.fds: list[int] = [os.dup(target)]
        self.blocked: tuple[str, ...] | None = None  # kept in place of a directory

    def to(self, parts: tuple[str, ...]) -> int | None:
        if self.blocked is not None and parts[: len(self.blocked)] == self.blocked:
            return None
        common = 0
        while common < min(len(parts), len(self.parts)) and parts[common] == self.parts[common]:
            common += 1
        while len(self.parts) > common:
            self.parts.pop()
            os.close(self.fds.pop())
        for part in parts[common:]:
            made = make_dir_at(self.fds[-1], part, _DIR_MODE)
            try:
                fd = open_dir_at(self.fds[-1], part)
            except UnsafePath:
                if self.keep and not made:
                    self.blocked = (*self.parts, part)
                    return None
                raise
            if made and self.uid is not None:
                os.fchown(fd, self.uid, self.uid if self.gid is None else self.gid)
            self.parts.append(part)
            self.fds.append(fd)
        return self.fds[-1]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def _make_link(parent: int, name: str, target: str, keep: bool) -> bool:
    # Left root's: a link's owner changes nothing it can reach, and chowning it by name in
    # a directory the user may change could be turned onto another file.
    try:
        os.symlink(target, name, dir_fd=parent)
    except FileExistsError:
        if keep:
            return False
        raise
    return True


def _make_file(
    parent: int, entry: Entry, blobs: Path, uid: int | None, gid: int | None, keep: bool
) -> bool:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(entry.path[-1], flags, 0o600, dir_fd=parent)
    except FileExistsError:
        if keep:
            return False
        raise
    try:
        written = 0
        for digest in entry.chunks:
            written += _copy_blob(blob_path(blobs, digest), fd)
        if written != entry.size:
            raise WorkdirError(f"{'/'.join(entry.path)}: {written} bytes, expected {entry.size}")
        if uid is not None:
            os.fchown(fd, uid, uid if gid is None else gid)
        os.fchmod(fd, entry.mode)
    finally:
        os.close(fd)
    return True


def _link_file(parent: int, entry: Entry, blobs: Path, links: Path) -> bool:
    """Make the entry a hard link to its read-only file in the link store; False when it
    is to be copied instead (empty, or a store the kernel will not link from: another
    filesystem, too many links). Raises FileExistsError when the name is taken."""
    if not entry.chunks:
        return False
    source = _link_source(entry, blobs, links)
    try:
        os.link(source, entry.path[-1], dst_dir_fd=parent, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            return False
        raise
    return True


def _link_source(entry: Entry, blobs: Path, links: Path) -> str:
    """The store's file with this entry's bytes and mode, made once (as root, 0644/0755)."""
    key = hashlib.sha256((f"{entry.mode:o}:" + ",".join(entry.chunks)).encode()).hexdigest()
    path = links / key[:2] / key
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISREG(st.st_mode) and st.st_uid == 0 and st.st_size == entry.size:
            return str(path)
        os.unlink(path)  # not what this store makes: made again
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Not the pid: shims of confined replicas may share one (PID namespaces).
    tmp = path.with_name(f".{key}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)  # only a tmp this call made is removed below
    try:
        written = sum(_copy_blob(blob_path(blobs, d), fd) for d in entry.chunks)
        if written != entry.size:
            raise WorkdirError(f"{'/'.join(entry.path)}: {written} bytes, expected {entry.size}")
        os.fchmod(fd, entry.mode)
        os.close(fd)
        fd = -1
        # Never over a name another shim made at the same time: a link(2) to a file being
        # renamed over fails (its inode has no names left). The first one made stays.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path, follow_symlinks=False)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return str(path)


def _copy_blob(path: Path, out: int) -> int:
    """Append the cached blob to `out` in the kernel; the bytes it copied."""
    src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode) or st.st_size > CHUNK_BYTES:
            raise WorkdirError(f"cached blob {path.name[:12]} is not a blob")
        left, done = st.st_size, 0
        while left > 0:
            n = _copy_some(src, out, done, left)
            if n == 0:
                raise WorkdirError(f"cached blob {path.name[:12]} ended early")
            left -= n
            done += n
        return done
    finally:
        os.close(src)


_COPY_FALLBACK = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM)


def _copy_some(src: int, out: int, offset: int, count: int) -> int:
    try:
        return os.copy_file_range(src, out, count, offset)
    except OSError as exc:
        if exc.errno not in _COPY_FALLBACK:
            raise
    return os.sendfile(out, src, offset, count)
