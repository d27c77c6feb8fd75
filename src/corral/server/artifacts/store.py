"""Where uploaded working directories are kept: a directory, or an S3-compatible bucket.

Per workspace, never shared: `<ws>/blobs/<hex[:2]>/<hex>` and `<ws>/manifests/<hex>.json`,
where `<ws>` is the workspace's id (a workspace deleted and made again under the same name
does not inherit the old one's files). Blobs and manifests are content-addressed, so a
write never changes what a name holds: writing one that exists is skipped.

Every method is blocking I/O: the API calls them from worker threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from corral.wire.artifacts import HEX

_WORKSPACE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A `sizes` query asks S3 for each blob (a HEAD), or lists the workspace's blobs (1000 a
# page), whichever costs less; the store's size is unknown, so it lists at most as many
# pages as the HEADs it saves would cost, then asks for the rest one by one. Measured on
# moto's server on loopback: a page of 1000 keys costs about 64 HEADs (300 ms, 4.5 ms).
HEADS_PER_PAGE = 64
HEAD_THREADS = 16


class StoreError(RuntimeError):
    """The store could not be read or written (a full disk, a bucket unreachable)."""


class ArtifactStore(Protocol):
    def sizes(self, ws: str, digests: Iterable[str]) -> dict[str, int]:
        """The size of each of these blobs the workspace has; absent ones are left out."""
        ...

    def put_blob(self, ws: str, digest: str, data: bytes) -> None: ...

    def get_blob(self, ws: str, digest: str) -> bytes | None: ...

    def delete_blob(self, ws: str, digest: str) -> None: ...

    def put_manifest(self, ws: str, digest: str, data: bytes) -> None: ...

    def get_manifest(self, ws: str, digest: str) -> bytes | None: ...


def _check(ws: str, digest: str) -> None:
    # Names come from authenticated routes and validated bodies; checked again here because
    # they become paths and keys.
    if not _WORKSPACE_ID.match(ws) or not HEX.match(digest):
        raise ValueError(f"not a workspace id and blob digest: {ws!r}, {digest!r}")


def blob_key(ws: str, digest: str) -> str:
    _check(ws, digest)
    return f"{ws}/blobs/{digest[:2]}/{digest}"


def manifest_key(ws: str, digest: str) -> str:
    _check(ws, digest)
    return f"{ws}/manifests/{digest}.json"


class LocalStore:
    """A directory: 0700 directories, 0600 files, each written to a temporary file and
    renamed into place, so a reader never sees half a blob."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def _path(self, key: str) -> Path:
        return self.root / key

    def sizes(self, ws: str, digests: Iterable[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for digest in digests:
            try:
                found[digest] = os.stat(self._path(blob_key(ws, digest))).st_size
            except FileNotFoundError:
                continue
        return found

    def put_blob(self, ws: str, digest: str, data: bytes) -> None:
        self._write(self._path(blob_key(ws, digest)), data)

    def get_blob(self, ws: str, digest: str) -> bytes | None:
        return self._read(self._path(blob_key(ws, digest)))

    def delete_blob(self, ws: str, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(blob_key(ws, digest)))

    def put_manifest(self, ws: str, digest: str, data: bytes) -> None:
        self._write(self._path(manifest_key(ws, digest)), data)

    def get_manifest(self, ws: str, digest: str) -> bytes | None:
        return self._read(self._path(manifest_key(ws, digest)))

    def _read(self, path: Path) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def _write(self, path: Path, data: bytes) -> None:
        if path.exists():
            return  # content-addressed: the same name holds the same bytes
        parent = path.parent
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp: O_EXCL, mode 0600, in the same directory (the rename stays atomic).
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.rename(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StoreError(f"cannot write to the artifact store: {exc.strerror}") from exc


class S3Store:
    """An S3-compatible bucket through boto3: the standard credential chain, and the
    endpoint from AWS_ENDPOINT_URL (which boto3 reads itself)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if client is None:
            # Only a server with an S3 store pays for the import.
            import boto3  # type: ignore[import-untyped]

            client = boto3.client("s3")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.page_keys = 1000  # keys per listed page (S3's most)

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"expected s3://bucket[/prefix], not {url!r}")
        return cls(parsed.netloc, parsed.path)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def sizes(self, ws: str, digests: Iterable[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(digests))
        if len(wanted) < 2 * HEADS_PER_PAGE:  # a page would save no more than it costs
            return self._headed(ws, wanted)
        found, last = self._listed(ws, set(wanted), len(wanted) // HEADS_PER_PAGE)
        if last is None:
            return found  # the whole prefix was listed: what is not there is absent
        # Keys come in order: one past the last listed key may still exist.
        rest = [d for d in wanted if d not in found and self._key(blob_key(ws, d)) > last]
        found.update(self._headed(ws, rest))
        return found

    def _headed(self, ws: str, digests: list[str]) -> dict[str, int]:
        if not digests:
            return {}
        with ThreadPoolExecutor(min(HEAD_THREADS, len(digests))) as pool:
            answers = list(pool.map(lambda d: (d, self._head(blob_key(ws, d))), digests))
        return {d: size for d, size in answers if size is not None}

    def _head(self, key: str) -> int | None:
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _not_found(exc):
                return None
            raise StoreError(f"cannot read the artifact store: {exc}") from exc
        return int(answer["ContentLength"])

    def _listed(
        self, ws: str, wanted: set[str], max_pages: int
    ) -> tuple[dict[str, int], str | None]:
        """The sizes of `wanted` found in at most `max_pages` pages, and the last key seen
        when the listing stopped short (None: it reached the end)."""
        found: dict[str, int] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=self._key(f"{ws}/blobs/"),
            PaginationConfig={"PageSize": self.page_keys},
        )
        try:
            for n, page in enumerate(pages, 1):
                contents = page.get("Contents", ())
                for item in contents:
                    digest = item["Key"].rsplit("/", 1)[-1]
                    if digest in wanted:
                        found[digest] = int(item["Size"])
                if page.get("IsTruncated") and (n >= max_pages or len(found) == len(wanted)):
                    return found, str(contents[-1]["Key"]) if contents else ""
        except Exception as exc:
            raise StoreError(f"cannot list the artifact store: {exc}") from exc
        return found, None

    def put_blob(self, ws: str, digest: str, data: bytes) -> None:
        self._put(blob_key(ws, digest), data)

    def get_blob(self, ws: str, digest: str) -> bytes | None:
        return self._get(blob_key(ws, digest))

    def delete_blob(self, ws: str, digest: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(blob_key(ws, digest)))
        except Exception as exc:
            raise StoreError(f"cannot write to the artifact store: {exc}") from exc

    def put_manifest(self, ws: str, digest: str, data: bytes) -> None:
        self._put(manifest_key(ws, digest), data)

    def get_manifest(self, ws: str, digest: str) -> bytes | None:
        return self._get(manifest_key(ws, digest))

    def _put(self, key: str, data: bytes) -> None:
        # One PUT is atomic in S3: a reader sees the whole object or none.
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise StoreError(f"cannot write to the artifact store: {exc}") from exc

    def _get(self, key: str) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            data: bytes = answer["Body"].read()
        except Exception as exc:
            if _not_found(exc):
                return None
            raise StoreError(f"cannot read the artifact store: {exc}") from exc
        return data


def _not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    code = str((response or {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def open_store(location: str) -> ArtifactStore:
    """The store a server option names: s3://bucket/prefix, or a directory."""
    if location.startswith("s3://"):
        return S3Store.from_url(location)
    if "://" in location:
        raise ValueError(
            f"artifact store: expected a directory or s3://bucket/prefix, not {location!r}"
        )
    return LocalStore(Path(location))
