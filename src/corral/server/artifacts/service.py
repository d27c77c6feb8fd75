"""Uploaded working directories: what a workspace's store lacks, taking frames of blobs,
taking a manifest, and which node may read which tree.

Blocking (storage I/O and hashing): the API runs these in worker threads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.states import ACTIVE_REPLICA_STATES
from corral.server.artifacts.store import ArtifactStore
from corral.server.errors import Invalid, NotFound
from corral.server.store.tables import Job, Replica, Workspace
from corral.spec.code import DIGEST
from corral.wire.artifacts import (
    FrameError,
    FrameReader,
    Manifest,
    ManifestStored,
    blob_digest,
    frame,
)


def missing(store: ArtifactStore, ws: str, blobs: list[str]) -> list[str]:
    """Those of `blobs` the workspace's store lacks, in the order asked, each once."""
    have = store.sizes(ws, blobs)
    return [d for d in dict.fromkeys(blobs) if d not in have]


# Blobs are written this many at a time, across all uploads: a file's creation is a few
# system calls that wait on the filesystem, not on Python (measured: 200 MB of 40 KB
# files, one writer: 7 s; see the report of issue 14).
WRITERS = ThreadPoolExecutor(8, thread_name_prefix="artifact-write")


class FrameSink:
    """Frames of one upload as they arrive: each whole, verified blob is stored at once;
    a blob whose bytes do not match its digest is refused and nothing of it is kept."""

    def __init__(self, store: ArtifactStore, ws: str) -> None:
        self.store = store
        self.ws = ws
        self.stored = 0
        self._reader = FrameReader()

    def feed(self, data: bytes) -> None:
        try:
            blobs = self._reader.feed(data)
        except FrameError as exc:
            raise _bad_frames(str(exc)) from None
        if len(blobs) > 1:
            # list(): wait for every write, and raise the first failure.
            list(WRITERS.map(lambda blob: self.store.put_blob(self.ws, *blob), blobs))
        elif blobs:
            self.store.put_blob(self.ws, *blobs[0])
        self.stored += len(blobs)

    def finish(self, data: bytes = b"") -> int:
        self.feed(data)
        try:
            self._reader.finish()
        except FrameError as exc:
            raise _bad_frames(f"truncated upload: {exc}") from None
        return self.stored


def _bad_frames(message: str) -> Invalid:
    return Invalid(f"blobs: {message}", [{"path": "blobs", "message": message}])


def _invalid(path: str, message: str) -> Invalid:
    return Invalid(f"{path}: {message}", [{"path": path, "message": message}])


def put_manifest(
    store: ArtifactStore, ws: str, manifest: Manifest, max_bytes: int
) -> ManifestStored:
    """Keep a manifest whose every chunk the workspace has, whose files' sizes are what
    their chunks hold, and whose tree is within `max_bytes` unpacked."""
    _check_shape(manifest)
    blobs = manifest.blobs()
    sizes = store.sizes(ws, blobs)
    for digest in blobs:
        if digest not in sizes:
            raise _invalid(
                "files",
                f"blob {digest} is not in this workspace's store; upload it first "
                "(POST .../artifacts/blobs)",
            )
    for i, entry in enumerate(manifest.files):
        # The size is checked against what the chunks hold, so that a manifest cannot
        # claim a small tree and unpack a large one on every node.
        held = sum(sizes[d] for d in entry.chunks)
        if held != entry.size:
            raise _invalid(
                f"files[{i}].size",
                f"{entry.path}: size {entry.size} but its chunks hold {held} bytes",
            )
    total = manifest.total_bytes()
    if total > max_bytes:
        raise _invalid(
            "files",
            f"the working directory is {_human(total)}; this server takes at most "
            f"{_human(max_bytes)} (CORRAL_WORKDIR_MAX_BYTES). Leave large data out with a "
            ".corralignore and put it in a volume",
        )
    digest = manifest.digest()
    store.put_manifest(ws, digest, manifest.canonical())
    return ManifestStored(digest=digest, files=len(manifest.files), bytes=total)


def _check_shape(manifest: Manifest) -> None:
    """What the model alone does not check: a link holds no bytes, and no path is both a
    file and a directory."""
    paths = {f.path for f in manifest.files}
    for i, entry in enumerate(manifest.files):
        if entry.link is not None and (entry.chunks or entry.size):
            raise _invalid(f"files[{i}]", f"{entry.path}: a symlink has no chunks and size 0")
        parts = entry.path.split("/")
        for n in range(1, len(parts)):
            parent = "/".join(parts[:n])
            if parent in paths:
                raise _invalid(
                    f"files[{i}].path",
                    f"{entry.path}: {parent} is a file (or a link), not a directory",
                )


def _human(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def load_manifest(store: ArtifactStore, ws: str, digest: str) -> Manifest | None:
    data = store.get_manifest(ws, digest)
    if data is None:
        return None
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError:
        return None  # not one this server wrote: as good as absent
    return manifest if blob_digest(data) == digest else None


def manifest_info(store: ArtifactStore, ws: str, digest: str) -> ManifestStored:
    manifest = load_manifest(store, ws, digest)
    if manifest is None:
        raise NotFound(f"working directory sha256:{digest} not found in this workspace")
    return ManifestStored(digest=digest, files=len(manifest.files), bytes=manifest.total_bytes())


WORKDIR_MESSAGE = (
    "expected the digest of an uploaded directory (sha256:…); corral job run uploads it"
)


def check_workdir_format(workdir: str | None) -> None:
    """A spec the server stores names its working directory by digest: a local path means
    a client that does not upload (an old one, or not corral's)."""
    if workdir is not None and not DIGEST.match(workdir):
        raise _invalid("workdir", WORKDIR_MESSAGE)


def check_workdir(store: ArtifactStore, ws: str, workdir: str | None) -> None:
    """At submission: the digest's manifest is in the workspace's store."""
    check_workdir_format(workdir)
    if workdir is None:
        return
    digest = workdir.removeprefix("sha256:")
    if store.get_manifest(ws, digest) is None:
        raise _invalid(
            "workdir",
            f"{workdir} is not an uploaded working directory of this workspace; "
            "upload it first (corral job run does)",
        )


def node_may_read(session: Session, node_id: str, workspace: str, digest: str) -> str | None:
    """The id of workspace `workspace` when a replica on this node, not ended, runs a job
    of it whose working directory is `digest`; else None (answered as not found)."""
    rows = session.execute(
        select(Workspace.id, Job.spec)
        .join(Job, Job.workspace_id == Workspace.id)
        .join(Replica, Replica.job_id == Job.id)
        .where(
            Workspace.name == workspace,
            Replica.node_id == node_id,
            Replica.state.in_(ACTIVE_REPLICA_STATES),
        )
    ).all()
    wanted = f"sha256:{digest}"
    for ws_id, spec in rows:
        if isinstance(spec, dict) and spec.get("workdir") == wanted:
            return str(ws_id)
    return None


def blob_frames(store: ArtifactStore, ws: str, manifest: Manifest, blobs: list[str]) -> list[str]:
    """Check a node's request for blobs of `manifest`; returns them, each once."""
    known = set(manifest.blobs())
    wanted = list(dict.fromkeys(blobs))
    for digest in wanted:
        if digest not in known:
            raise _invalid(
                "blobs", f"blob {digest} is not in working directory {manifest.digest()}"
            )
    have = store.sizes(ws, wanted)
    for digest in wanted:
        if digest not in have:
            raise NotFound(f"blob {digest} is missing from the artifact store")
    return wanted


# Blobs read ahead of the one being sent: an object store answers each GET after a round
# trip, so they are asked for together; at most this many blobs (4 MiB each) are held.
# Measured (moto with 20 ms added to each GET, 500 blobs of 40 KB): 14.2 s one at a time,
# 3.3 s with 8 ahead.
READ_AHEAD = 8
READERS = ThreadPoolExecutor(16, thread_name_prefix="artifact-read")


def stream_frames(store: ArtifactStore, ws: str, blobs: list[str]) -> Iterator[bytes]:
    """Frames of these blobs, in order, read a few ahead. A stored blob whose bytes no
    longer match its name (a write cut short by a crash) is removed, so that the next
    `missing` asks for it again, and the stream ends short: the node sees it truncated."""
    ahead: deque[tuple[str, Future[bytes | None]]] = deque()
    queue = iter(blobs)
    try:
        while True:
            while len(ahead) < READ_AHEAD:
                digest = next(queue, None)
                if digest is None:
                    break
                ahead.append((digest, READERS.submit(store.get_blob, ws, digest)))
            if not ahead:
                return
            digest, pending = ahead.popleft()
            data = pending.result()
            if data is None:
                return
            if blob_digest(data) != digest:
                store.delete_blob(ws, digest)
                return
            yield frame(digest, data)
    finally:
        for _, pending in ahead:  # the node went away, or the stream ended short
            pending.cancel()
