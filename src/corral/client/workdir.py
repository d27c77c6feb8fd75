"""Packing a working directory: which files travel (git's ignore rules, plus .corralignore),
and the manifest of their content-addressed chunks (wire/artifacts.py).

Rules, as git applies them: a `.gitignore` in any directory holds patterns relative to that
directory, a deeper file's patterns win over a shallower one's, `!pattern` takes a file back,
and an ignored directory is not entered at all (nothing under it can be taken back). A tree
inside a git repository also gets the .gitignore files above it, up to the repository's top,
and the repository's .git/info/exclude. The
top-level `.corralignore` has the last word, after every `.gitignore`: it is where a user
leaves out data git tracks, or takes back (`!`) what git ignores. `.git` is never sent.

Symlinks are recorded with their target and never followed: a link out of the tree must not
upload whatever it points at. Sockets, fifos and devices are skipped.

Hashing a 200 MB tree again on each submit would cost more than the upload it saves, so a
per-tree cache ($CORRAL_HOME/cache/workdir/) remembers each file's chunks under its
(path, size, mtime_ns, inode). A file changed within the same clock tick as its hashing
could keep its old stamp (git's "racily clean" entries), so a file modified less than
RACY_NS before the cache is written is not cached: it is read again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathspec import GitIgnoreSpec

from corral.client.errors import CorralError
from corral.wire.artifacts import (
    CHUNK_BYTES,
    DEFAULT_MAX_TREE_BYTES,
    MAX_FILES,
    MAX_PATH_BYTES,
    Manifest,
)

IGNORE_FILE = ".corralignore"
GITIGNORE = ".gitignore"
CACHE_VERSION = 1
RACY_NS = 2_000_000_000
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# Walking stops once a tree is this many times over the file limit: its error is the same.
_WALK_SLACK = 4


class WorkdirError(CorralError):
    """The working directory cannot be packed; the message is one line a person can act on."""


@dataclass(frozen=True)
class Source:
    """Where a blob's bytes are in the tree, to read them again for the upload."""

    path: str
    offset: int
    length: int


@dataclass(frozen=True)
class PackedTree:
    root: Path
    manifest: Manifest
    digest: str
    sources: Mapping[str, Source]
    read_bytes: int  # bytes read to hash them (files the cache did not know)

    @property
    def files(self) -> int:
        return len(self.manifest.files)

    @property
    def total_bytes(self) -> int:
        return self.manifest.total_bytes()

    def read_blob(self, digest: str) -> bytes:
        """A blob's bytes, read again from its file and checked against its digest."""
        src = self.sources[digest]
        try:
            fd = os.open(self.root / src.path, _READ_FLAGS)
            try:
                data = os.pread(fd, src.length, src.offset)
            finally:
                os.close(fd)
        except OSError as exc:
            raise WorkdirError(f"{src.path}: cannot read it: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise WorkdirError(f"{src.path} changed while it was being uploaded; run again")
        return data


@dataclass
class _Found:
    path: str
    mode: int
    size: int
    mtime_ns: int
    inode: int
    link: str | None = None
    chunks: list[str] = field(default_factory=list)


def cache_dir_for(home: Path) -> Path:
    return home / "cache" / "workdir"


def pack_workdir(
    root: Path,
    *,
    cache_dir: Path | None = None,
    max_files: int = MAX_FILES,
    max_bytes: int = DEFAULT_MAX_TREE_BYTES,
    threads: int = 4,
) -> PackedTree:
    """The manifest of `root`'s files that travel, each hashed in CHUNK_BYTES chunks.
    Raises WorkdirError for a tree that is not a directory, is unreadable or too big."""
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise WorkdirError(f"{display(root)} is not a directory")
    try:
        found = _Walk(root, max_files * _WALK_SLACK).run()
    except _TooMany as exc:
        found = exc.found
    _check_limits(root, found, max_files, max_bytes)
    cache_file = None if cache_dir is None else cache_dir / (_tree_key(root) + ".json")
    cached = _read_cache(cache_file)
    todo: list[_Found] = []
    for item in found:
        if item.link is not None:
            continue
        hit = cached.get(item.path)
        if hit is not None and hit[:3] == [item.size, item.mtime_ns, item.inode]:
            item.chunks = list(hit[3])
        else:
            todo.append(item)
    read = 0
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            read = sum(pool.map(lambda f: _hash_file(root, f), todo))
    if cache_file is not None:
        _write_cache(cache_file, found, cached)
    entries: list[dict[str, Any]] = []
    sources: dict[str, Source] = {}
    for item in found:
        entries.append(
            {"path": item.path, "mode": item.mode, "size": item.size, "chunks": item.chunks}
            | ({} if item.link is None else {"link": item.link})
        )
        for i, digest in enumerate(item.chunks):
            offset = i * CHUNK_BYTES
            length = min(CHUNK_BYTES, item.size - offset)
            sources.setdefault(digest, Source(item.path, offset, length))
    # Validated in one call from plain data: 5,000 FileEntry(...) calls cost ten times more.
    manifest = Manifest.model_validate({"files": entries})
    return PackedTree(root, manifest, manifest.digest(), sources, read)


class _Walk:
    """The files of a tree that travel, sorted by path (the manifest's order)."""

    def __init__(self, root: Path, stop_after: int) -> None:
        self.root = root
        self.stop_after = stop_after
        self.found: list[_Found] = []
        self.outer = _outer_rules(root)
        self.last = _rules(root, IGNORE_FILE, "")

    def run(self) -> list[_Found]:
        self._dir(self.root, "", [])
        self.found.sort(key=lambda f: f.path)
        return self.found

    def _ignored(self, rel: str, rules: list[tuple[str, GitIgnoreSpec]]) -> bool:
        ignored = False
        for above, spec in self.outer:
            verdict = spec.check_file(above + rel).include
            if verdict is not None:
                ignored = verdict
        for base, spec in [*rules, *self.last]:
            if rel.startswith(base):
                verdict = spec.check_file(rel[len(base) :]).include
                if verdict is not None:
                    ignored = verdict
        return ignored

    def _dir(self, path: Path, prefix: str, rules: list[tuple[str, GitIgnoreSpec]]) -> None:
        rules = rules + _rules(path, GITIGNORE, prefix)
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            raise WorkdirError(f"{display(path)}: cannot list it: {exc.strerror}") from None
        for entry in entries:
            if entry.name == ".git":
                continue
            rel = prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we looked
            is_dir = stat.S_ISDIR(st.st_mode)
            if self._ignored(rel + "/" if is_dir else rel, rules):
                continue
            _check_name(rel)
            if is_dir:
                self._dir(Path(entry.path), rel + "/", rules)
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(entry.path)
                self._add(_Found(rel, 0o644, 0, st.st_mtime_ns, st.st_ino, link=target))
            elif stat.S_ISREG(st.st_mode):
                mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                self._add(_Found(rel, mode, st.st_size, st.st_mtime_ns, st.st_ino))

    def _add(self, item: _Found) -> None:
        self.found.append(item)
        if len(self.found) > self.stop_after:
            raise _TooMany(self.found)


class _TooMany(Exception):
    def __init__(self, found: list[_Found]) -> None:
        self.found = found


def _rules(directory: Path, name: str, prefix: str) -> list[tuple[str, GitIgnoreSpec]]:
    """The patterns of `directory/name`, if it is a regular file (git does not follow a
    symlinked .gitignore either), as (the directory's path in the tree, spec)."""
    try:
        fd = os.open(directory / name, _READ_FLAGS)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        with os.fdopen(fd, "rb", closefd=False) as f:
            text = f.read().decode("utf-8", "replace")
    finally:
        os.close(fd)
    return [(prefix, GitIgnoreSpec.from_lines(text.splitlines()))]


def _outer_rules(root: Path) -> list[tuple[str, GitIgnoreSpec]]:
    """The rules from outside the tree, outermost first, each with root's path below its
    directory: the repository's .git/info/exclude, then the .gitignore files above `root` up
    to the repository's top. A subdirectory of a repository is filtered as git filters it
    (its __pycache__/ and .venv/ stay home). None outside a repository."""
    chain: list[Path] = []
    top = root
    while not (top / ".git").exists():
        if top.parent == top:
            return []  # not in a repository: git would read none of them
        top = top.parent
        chain.append(top)

    def below(directory: Path) -> str:
        rel = root.relative_to(directory).as_posix()
        return "" if rel == "." else rel + "/"

    rules = [(below(top), spec) for _, spec in _rules(top / ".git" / "info", "exclude", "")]
    for directory in reversed(chain):
        rules += [(below(directory), spec) for _, spec in _rules(directory, GITIGNORE, "")]
    return rules


def _check_name(rel: str) -> None:
    try:
        size = len(rel.encode("utf-8"))
    except UnicodeEncodeError:
        raise WorkdirError(
            f"{rel.encode('utf-8', 'replace').decode()}: the name is not UTF-8; rename it or "
            f"list it in {IGNORE_FILE}"
        ) from None
    if size > MAX_PATH_BYTES:
        raise WorkdirError(f"{rel[:80]}…: the path is longer than {MAX_PATH_BYTES} bytes")


def _hash_file(root: Path, item: _Found) -> int:
    """Hash `item` in chunks; its size and stamps become those of what was read."""
    try:
        fd = os.open(root / item.path, _READ_FLAGS)
    except OSError as exc:
        raise WorkdirError(f"{item.path}: cannot read it: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        chunks, size = [], 0
        while data := _read_chunk(fd):
            chunks.append(hashlib.sha256(data).hexdigest())
            size += len(data)
    finally:
        os.close(fd)
    item.chunks, item.mtime_ns, item.inode = chunks, st.st_mtime_ns, st.st_ino
    if size != st.st_size:
        item.mtime_ns = -1  # changed while read: never a cache hit
    item.size = size
    return size


def _read_chunk(fd: int) -> bytes:
    parts, got = [], 0
    while got < CHUNK_BYTES:
        data = os.read(fd, CHUNK_BYTES - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _check_limits(root: Path, found: list[_Found], max_files: int, max_bytes: int) -> None:
    total = sum(f.size for f in found)
    if len(found) > max_files:
        what = f"more than {len(found) - 1:,}" if len(found) > max_files * 2 else f"{len(found):,}"
        raise WorkdirError(
            f"{display(root)} has {what} files to send, more than the {max_files:,} a working "
            f"directory may hold; {_biggest(found, by_count=True)}"
        )
    if total > max_bytes:
        raise WorkdirError(
            f"{display(root)} has {human_bytes(total)} to send, more than the "
            f"{human_bytes(max_bytes)} a working directory may hold; "
            f"{_biggest(found, by_count=False)}"
        )


def _biggest(found: list[_Found], *, by_count: bool) -> str:
    """The largest top-level directories, and the .corralignore line that leaves one out."""
    sizes: dict[str, list[int]] = {}
    for f in found:
        top, sep, _ = f.path.partition("/")
        counts = sizes.setdefault(top + "/" if sep else top, [0, 0])
        counts[0] += 1
        counts[1] += f.size
    ranked = sorted(sizes.items(), key=lambda kv: kv[1][0 if by_count else 1], reverse=True)
    top3 = [
        f"{name} ({n:,} files, {human_bytes(b)})" for name, (n, b) in ranked[:3] if name[-1] == "/"
    ]
    first = next((name for name, _ in ranked if name.endswith("/")), "data/")
    where = f"the biggest directories: {', '.join(top3)}; " if top3 else ""
    return f"{where}leave what the job does not need out with a {IGNORE_FILE} line like `{first}`"


def _tree_key(root: Path) -> str:
    return hashlib.sha256(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _read_cache(path: Path | None) -> dict[str, list[Any]]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("version") != CACHE_VERSION
        or data.get("chunk") != CHUNK_BYTES
        or not isinstance(data.get("files"), dict)
    ):
        return {}
    return {k: v for k, v in data["files"].items() if isinstance(v, list) and len(v) == 4}


def _write_cache(path: Path, found: list[_Found], cached: dict[str, list[Any]]) -> None:
    """Best effort: a cache that cannot be written costs a re-read next time, nothing more.
    Not written at all when it would say what it says already (a re-submit of a tree)."""
    fresh = time.time_ns() - RACY_NS
    files = {
        f.path: [f.size, f.mtime_ns, f.inode, f.chunks]
        for f in found
        if f.link is None and 0 <= f.mtime_ns < fresh
    }
    if files == cached:
        return
    data = {"version": CACHE_VERSION, "chunk": CHUNK_BYTES, "files": files}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            # dumps, not dump: one call of the C encoder, not a Python loop of small writes.
            f.write(json.dumps(data, separators=(",", ":")).encode())
        os.replace(tmp, path)
    except OSError:
        return


def display(path: Path) -> str:
    """A path as a person writes it: under the home directory as ~/…"""
    home = str(Path.home())
    text = str(path)
    if text == home or text.startswith(home.rstrip("/") + "/"):
        return "~" + text[len(home.rstrip("/")) :]
    return text


def human_bytes(n: int) -> str:
    """Decimal units, as the rest of the output: 12.3 kB, 200.0 MB."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
