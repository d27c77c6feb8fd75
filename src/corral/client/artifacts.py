"""Uploading a packed working directory to the workspace's artifact store: ask which blobs
the store lacks, send only those (frames, in requests of at most BATCH_BYTES), then the
manifest. A tree whose files the store already has costs two small requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from corral.client.errors import NotFound
from corral.client.http import Http
from corral.client.workdir import PackedTree
from corral.wire.artifacts import (
    HEADER_BYTES,
    MAX_BLOBS_PER_QUERY,
    BlobQuery,
    ManifestStored,
    Missing,
    frame,
)

# Big enough that a request's overhead is noise, small enough (half the server's
# MAX_UPLOAD_BYTES) that a slow link sends one well within the client's timeout.
BATCH_BYTES = 32 * 1024 * 1024

# (bytes sent so far, bytes to send in all); called once before the first batch and after each.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Uploaded:
    digest: str  # the manifest's: the job's workdir is "sha256:" + digest
    files: int
    bytes: int  # the tree's size
    uploaded_bytes: int  # blob bytes this upload sent (what the store lacked)


def upload_tree(
    http: Http,
    tree: PackedTree,
    *,
    workspace: str | None = None,
    progress: Progress | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> Uploaded:
    """Store `tree` in `workspace`'s artifact store (this client's by default)."""
    base = f"{http._ws(workspace)}/artifacts"
    try:  # the same tree again (a re-run): one small request
        known = http._get(ManifestStored, f"{base}/manifests/{tree.digest}")
        return Uploaded(known.digest, known.files, known.bytes, 0)
    except NotFound:
        pass
    missing = _missing(http, base, tree.manifest.blobs())
    sizes = {d: tree.sources[d].length for d in missing}
    total = sum(sizes.values())
    sent = 0
    if progress is not None:
        progress(0, total)
    groups = list(batches(sizes, batch_bytes))

    def body(group: list[str]) -> bytes:
        return b"".join(frame(d, tree.read_blob(d)) for d in group)

    # The next batch is read and checked while this one is on the wire: reading and
    # hashing release the GIL, and the server's writing is not the client's waiting.
    with ThreadPoolExecutor(max_workers=1) as reader:
        upcoming = reader.submit(body, groups[0]) if groups else None
        for i, group in enumerate(groups):
            assert upcoming is not None
            data = upcoming.result()
            upcoming = reader.submit(body, groups[i + 1]) if i + 1 < len(groups) else None
            http._request("POST", f"{base}/blobs", content=data)
            sent += sum(sizes[d] for d in group)
            if progress is not None:
                progress(sent, total)
    manifest = tree.manifest.model_dump(mode="json")
    stored = http._send(ManifestStored, "POST", f"{base}/manifests", manifest)
    return Uploaded(stored.digest, stored.files, stored.bytes, sent)


def _missing(http: Http, base: str, blobs: list[str]) -> list[str]:
    missing: list[str] = []
    for start in range(0, len(blobs), MAX_BLOBS_PER_QUERY):
        query = BlobQuery(blobs=blobs[start : start + MAX_BLOBS_PER_QUERY])
        answer = http._send(Missing, "POST", f"{base}/missing", query.model_dump())
        missing.extend(answer.missing)
    return missing


def batches(sizes: Mapping[str, int], limit: int) -> Iterator[list[str]]:
    """Blob digests in groups whose frames fit in `limit` bytes (at least one blob each)."""
    group: list[str] = []
    used = 0
    for digest, size in sizes.items():
        need = HEADER_BYTES + size
        if group and used + need > limit:
            yield group
            group, used = [], 0
        group.append(digest)
        used += need
    if group:
        yield group
