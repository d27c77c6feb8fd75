"""The node's cache of uploaded working directories: fetched from the control plane once,
shared by every replica on the node that uses the same bytes.

```
<state>/artifacts/           0700 root: never in a replica's view (below the state dir)
  blobs/<hex[:2]>/<hex>      one chunk (wire/artifacts.py), checked against its digest
  manifests/<hex>.json       a manifest, written only once every blob it names is here
  boot_id                    the boot the cache belongs to
```

Nothing is fsynced: the cache belongs to one boot of the node. An agent that crashes or
restarts finds what the page cache holds, whole; after a reboot (or a power loss) the boot
id differs and the cache is dropped, so a torn blob is never copied into a replica. Syncing
instead would cost a re-submit's fetch a flush of every dirty page of the filesystem.

`ArtifactCache.fetch(workspace, digest)` asks `GET /v1/agent/artifacts/{ws}/manifests/{digest}`
(with the node token) unless this agent already had the server's yes for that workspace and
digest, then `POST .../blobs` for the blobs the cache lacks, in batches, each frame checked
(FrameReader) and its length matched against the manifest. The server answers 404 unless a
replica of that workspace assigned to this node uses the tree: a cached tree is never handed
to another workspace without the server's word. Concurrent fetches of one (workspace, digest)
share one request (single flight); a replica that stops waiting does not cancel it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
from pydantic import ValidationError

from corral.agent.workdir import CodePlan, blob_path
from corral.wire.agent import ReplicaAssignment
from corral.wire.artifacts import (
    CHUNK_BYTES,
    DEFAULT_MAX_TREE_BYTES,
    BlobQuery,
    FrameError,
    FrameReader,
    Manifest,
)

log = logging.getLogger("corral.agent.artifacts")
T = TypeVar("T")

MAX_MANIFEST_BYTES = 128 * 1024 * 1024
_WORKSPACE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
BATCH_BYTES = 32 * 1024 * 1024  # blobs asked for in one request
BATCH_BLOBS = 4096
PARALLEL_BATCHES = 4
ATTEMPTS = 3
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
MAX_BYTES_ENV = "CORRAL_WORKDIR_MAX_BYTES"


class FetchError(Exception):
    """The tree could not be fetched: one line saying why."""


class _Transient(FetchError):
    """Worth another try (the server unreachable, a 5xx, a cut stream)."""


@dataclass(frozen=True)
class Fetched:
    manifest: Path
    blobs: Path
    fetched_blobs: int  # 0 when everything was in the cache already
    fetched_bytes: int


def max_tree_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV)
    try:
        return int(raw) if raw else DEFAULT_MAX_TREE_BYTES
    except ValueError:
        return DEFAULT_MAX_TREE_BYTES


class ArtifactCache:
    def __init__(
        self,
        root: Path,
        server: str,
        token: Callable[[], str | None],
        *,
        max_bytes: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.root = root
        self.server = server.rstrip("/")
        self.blobs = root / "blobs"
        self.manifests = root / "manifests"
        self.max_bytes = max_tree_bytes() if max_bytes is None else max_bytes
        self._token = token
        self._transport = transport  # tests: httpx.MockTransport
        self._allowed: set[tuple[str, str]] = set()  # the server said yes, this run
        self._flights: dict[tuple[str, str], asyncio.Task[Fetched]] = {}
        self._opening = asyncio.Lock()
        self._opened = False

    def links_for(self, workspace: str) -> Path:
        """The workspace's link store (workdir.py): per workspace, beside the blobs."""
        if not _WORKSPACE.match(workspace):
            raise FetchError(f"{workspace!r} is not a workspace name")
        return self.root / "links" / workspace

    @property
    def index_url(self) -> str:
        """The control plane's wheel index (PEP 503), for nodes that cannot reach PyPI."""
        return f"{self.server}/v1/wheels/simple/"

    async def fetch(self, workspace: str, digest: str) -> Fetched:
        """The tree `digest` of `workspace`, in the cache. Raises FetchError."""
        key = (workspace, digest)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.create_task(
                self._fetch(workspace, digest), name=f"fetch-{digest[:12]}"
            )
            self._flights[key] = flight
            flight.add_done_callback(lambda _t: self._flights.pop(key, None))
        # Shielded: one replica stopped while waiting must not cancel the others' fetch.
        return await asyncio.shield(flight)

    async def _fetch(self, workspace: str, digest: str) -> Fetched:
        async with self._opening:
            if not self._opened:
                await asyncio.to_thread(self._open)
                self._opened = True
        cached = self.manifests / f"{digest}.json"
        if (workspace, digest) in self._allowed and cached.exists():
            return Fetched(cached, self.blobs, 0, 0)
        async with httpx.AsyncClient(timeout=TIMEOUT, transport=self._transport) as client:
            manifest = await self._retrying(lambda: self._manifest(client, workspace, digest))
            missing = await asyncio.to_thread(self._missing, manifest)
            need = sum(missing.values())
            await asyncio.to_thread(self._check_space, need)
            batches = _batches(missing)
            gate = asyncio.Semaphore(PARALLEL_BATCHES)

            async def one(batch: dict[str, int]) -> None:
                async with gate:
                    await self._retrying(lambda: self._blobs(client, workspace, digest, batch))

            await asyncio.gather(*(one(b) for b in batches))
        await asyncio.to_thread(self._commit, cached, manifest)
        self._allowed.add((workspace, digest))
        if missing:
            log.info(
                "fetched working directory %s of workspace %s: %d blobs, %d bytes",
                digest[:12],
                workspace,
                len(missing),
                need,
            )
        return Fetched(cached, self.blobs, len(missing), need)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = 0.5
        for n in range(ATTEMPTS):
            try:
                return await attempt()
            except _Transient as exc:
                if n == ATTEMPTS - 1:
                    raise FetchError(str(exc)) from None
                log.info("%s; trying again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _headers(self) -> dict[str, str]:
        token = self._token()
        if not token:
            raise FetchError("this node has no node token yet (not registered)")
        return {"Authorization": f"Bearer {token}"}

    def _url(self, workspace: str, digest: str) -> str:
        return f"{self.server}/v1/agent/artifacts/{workspace}/manifests/{digest}"

    async def _manifest(self, client: httpx.AsyncClient, workspace: str, digest: str) -> Manifest:
        url = self._url(workspace, digest)
        try:
            async with client.stream("GET", url, headers=self._headers()) as response:
                _check(response, workspace, digest)
                body = bytearray()
                async for part in response.aiter_bytes():
                    body += part
                    if len(body) > MAX_MANIFEST_BYTES:
                        raise FetchError(
                            f"the manifest of {digest[:12]} is over {MAX_MANIFEST_BYTES} bytes"
                        )
        except httpx.HTTPError as exc:
            raise _Transient(f"cannot reach {self.server}: {_describe(exc)}") from None
        try:
            manifest = Manifest.model_validate_json(bytes(body))
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else None
            where = ".".join(str(p) for p in first["loc"]) if first else ""
            problem = f"{where}: {first['msg']}" if first else str(exc)
            raise FetchError(f"the manifest of {digest[:12]} is not valid: {problem}") from None
        if manifest.digest() != digest:
            raise FetchError(f"the server's manifest does not have digest {digest[:12]}")
        total = manifest.total_bytes()
        if total > self.max_bytes:
            raise FetchError(
                f"working directory {digest[:12]} is {total} bytes; this node takes at most "
                f"{self.max_bytes} ({MAX_BYTES_ENV})"
            )
        for entry in manifest.files:
            if entry.link is None and len(entry.chunks) != -(-entry.size // CHUNK_BYTES):
                raise FetchError(f"{entry.path}: {len(entry.chunks)} chunks for {entry.size} bytes")
        return manifest

    async def _blobs(
        self,
        client: httpx.AsyncClient,
        workspace: str,
        digest: str,
        pending: dict[str, int],
    ) -> None:
        """Fetch the `pending` blobs (digest -> length), taking each off as it is stored: a
        second try asks only for what the first did not bring."""
        query = BlobQuery(blobs=list(pending))
        reader = FrameReader()
        try:
            async with client.stream(
                "POST",
                self._url(workspace, digest) + "/blobs",
                json=query.model_dump(mode="json"),
                headers=self._headers(),
            ) as response:
                _check(response, workspace, digest)
                async for part in response.aiter_bytes():
                    got = reader.feed(part)
                    if got:
                        for blob, data in got:
                            if pending.get(blob) != len(data):
                                raise FetchError(
                                    f"the server sent blob {blob[:12]} unasked, or not of the "
                                    "length its manifest says"
                                )
                        await asyncio.to_thread(self._store, got)
                        for blob, _data in got:
                            pending.pop(blob, None)
                reader.finish()
        except FrameError as exc:
            raise _Transient(f"a bad blob from {self.server}: {exc}") from None
        except httpx.HTTPError as exc:
            raise _Transient(f"cannot reach {self.server}: {_describe(exc)}") from None
        if pending:
            raise _Transient(f"the server did not send {len(pending)} blobs")

    def _open(self) -> None:
        """Make the cache's directories; drop what a previous boot left (see above)."""
        self.root.mkdir(mode=0o700, exist_ok=True)
        # The agent may not have made it (an operator's directory): never readable by others.
        if self.root.stat().st_mode & 0o077:
            self.root.chmod(0o700)
        boot = _boot_id()
        marker = self.root / "boot_id"
        try:
            seen = marker.read_text().strip()
        except FileNotFoundError:
            seen = None
        if seen != boot:
            stale = []
            for directory in (self.blobs, self.manifests, self.root / "links"):
                if directory.exists():
                    aside = self.root / f".stale-{directory.name}-{secrets.token_hex(4)}"
                    directory.rename(aside)  # at once; removed below
                    stale.append(aside)
            tmp = marker.with_name(f".boot_id.{secrets.token_hex(4)}")
            tmp.write_text(boot + "\n")
            tmp.replace(marker)
            for aside in [*stale, *self.root.glob(".stale-*")]:
                shutil.rmtree(aside, ignore_errors=True)
            if seen is not None:
                log.info("dropped the artifact cache of an earlier boot")
        self.blobs.mkdir(mode=0o700, exist_ok=True)
        self.manifests.mkdir(mode=0o700, exist_ok=True)

    def _missing(self, manifest: Manifest) -> dict[str, int]:
        """Blob digest -> its length, for the blobs the cache lacks."""
        lengths: dict[str, int] = {}
        for entry in manifest.files:
            for i, blob in enumerate(entry.chunks):
                lengths.setdefault(blob, min(CHUNK_BYTES, entry.size - i * CHUNK_BYTES))
        return {b: n for b, n in lengths.items() if not blob_path(self.blobs, b).exists()}

    def _check_space(self, need: int) -> None:
        if need == 0:
            return
        st = os.statvfs(self.blobs)
        free = st.f_bavail * st.f_frsize
        if need > free:
            raise FetchError(
                f"the working directory needs {need} bytes in {self.root}; {free} are free"
            )

    def _store(self, blobs: list[tuple[str, bytes]]) -> None:
        for digest, data in blobs:
            path = blob_path(self.blobs, digest)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            _write_whole(path, data)

    def _commit(self, cached: Path, manifest: Manifest) -> None:
        """Write the manifest once its blobs are here: its presence says the tree is whole."""
        _write_whole(cached, manifest.canonical())


def _write_whole(path: Path, data: bytes) -> None:
    """Readers see no file or all of it (not fsynced: the cache belongs to one boot)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _batches(missing: dict[str, int]) -> list[dict[str, int]]:
    batches: list[dict[str, int]] = []
    current: dict[str, int] = {}
    size = 0
    for blob, length in missing.items():
        if current and (size + length > BATCH_BYTES or len(current) >= BATCH_BLOBS):
            batches.append(current)
            current, size = {}, 0
        current[blob] = length
        size += length
    if current:
        batches.append(current)
    return batches


def _check(response: httpx.Response, workspace: str, digest: str) -> None:
    status = response.status_code
    if status == 200:
        return
    if status == 404:
        raise FetchError(
            f"the server has no working directory {digest[:12]} of workspace {workspace} for "
            "this node"
        )
    if status in (401, 403):
        raise FetchError("the server rejected the node token")
    if status >= 500 or status == 429:
        raise _Transient(f"the server answered HTTP {status}")
    raise FetchError(f"the server answered HTTP {status}")


def _describe(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"  # not Linux: the cache is kept across boots, unsynced


def needs_code(assignment: ReplicaAssignment) -> bool:
    """Whether the shim needs a `workdir.json` for this replica."""
    a = assignment
    return bool(a.workdir or a.environment or a.setup or a.image)


async def prepare(
    cache: ArtifactCache | None, assignment: ReplicaAssignment, replica_dir: Path
) -> CodePlan:
    """Fetch the replica's working directory into the cache (if it has one) and write
    `<rid>/workdir.json` for its shim. Raises FetchError."""
    manifest = blobs = None
    if assignment.workdir:
        if cache is None:
            raise FetchError("this agent keeps no artifact cache")
        fetched = await cache.fetch(assignment.workspace, assignment.workdir)
        manifest, blobs = str(fetched.manifest), str(fetched.blobs)
    index_url = cache.index_url if cache is not None and assignment.wheelhouse else None
    links = str(cache.links_for(assignment.workspace)) if manifest and cache else None
    plan = CodePlan(manifest, blobs, assignment.workdir, index_url, links)
    try:
        await asyncio.to_thread(plan.save, replica_dir)
    except OSError as exc:
        raise FetchError(f"cannot record it: {exc}") from None
    return plan
