"""Uploaded working directories: a manifest of files whose contents are content-addressed
blobs, stored per workspace by the control plane's artifact store.

A file's bytes are cut into chunks of CHUNK_BYTES (the last one shorter); each chunk is a
blob named by the lowercase hex SHA-256 of its bytes. The manifest lists every file with
its chunks; its digest is the SHA-256 of its canonical JSON (`Manifest.canonical()`), and a
job names the tree as `workdir: sha256:<digest>`. An unchanged file is never uploaded twice.

Blobs travel in frames, both ways (`POST .../artifacts/blobs` from the CLI; the agent's
fetch): `<64 ASCII hex digest><8-byte big-endian length><bytes>`, repeated, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, field_validator

CHUNK_BYTES = 4 * 1024 * 1024
MAX_FILES = 100_000
MAX_PATH_BYTES = 4096
MAX_BLOBS_PER_QUERY = 100_000
MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # one POST of frames
DEFAULT_MAX_TREE_BYTES = 2 * 1024**3  # the server's limit on one working directory
HEX = re.compile(r"^[0-9a-f]{64}$")
_HEADER = struct.Struct(">64sQ")
HEADER_BYTES = _HEADER.size


def blob_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(max_length=MAX_PATH_BYTES, description="relative, '/'-separated")
    mode: int = Field(default=0o644, description="0o755 for executables, else 0o644")
    size: int = Field(default=0, ge=0)
    chunks: list[str] = Field(default_factory=list, description="blob digests, in order")
    link: str | None = Field(
        default=None, max_length=MAX_PATH_BYTES, description="a symlink's target, as is"
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or "\0" in value or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"expected a relative path inside the tree, not {value!r}")
        return value

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: int) -> int:
        if value not in (0o644, 0o755):
            raise ValueError("mode is 0o644 or 0o755")
        return value

    @field_validator("chunks")
    @classmethod
    def _chunks(cls, value: list[str]) -> list[str]:
        for digest in value:
            if not HEX.match(digest):
                raise ValueError(f"a chunk is a lowercase hex SHA-256, not {digest[:80]!r}")
        return value


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    files: list[FileEntry] = Field(default_factory=list, max_length=MAX_FILES)

    @field_validator("files")
    @classmethod
    def _sorted_unique(cls, value: list[FileEntry]) -> list[FileEntry]:
        paths = [f.path for f in value]
        if paths != sorted(set(paths)):
            raise ValueError("files must be sorted by path, each path once")
        return value

    def canonical(self) -> bytes:
        data = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return blob_digest(self.canonical())

    def blobs(self) -> list[str]:
        """Every distinct chunk digest, in first-use order."""
        return list(dict.fromkeys(d for f in self.files for d in f.chunks))

    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class BlobQuery(BaseModel):
    """Which of these does the store lack (CLI), or send me these (agent)."""

    blobs: list[str] = Field(max_length=MAX_BLOBS_PER_QUERY)

    @field_validator("blobs")
    @classmethod
    def _hex(cls, value: list[str]) -> list[str]:
        for digest in value:
            if not HEX.match(digest):
                raise ValueError(f"a blob is named by its lowercase hex SHA-256, not {digest!r}")
        return value


class Missing(BaseModel):
    missing: list[str]


class ManifestStored(BaseModel):
    digest: str
    files: int
    bytes: int


def frame(digest: str, data: bytes) -> bytes:
    return _HEADER.pack(digest.encode("ascii"), len(data)) + data


def frames(items: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    for digest, data in items:
        yield frame(digest, data)


class FrameError(ValueError):
    pass


class FrameReader:
    """Parses frames from chunks of bytes as they arrive; checks every blob's digest."""

    def __init__(self, max_blob: int = CHUNK_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_blob

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buf += data
        out: list[tuple[str, bytes]] = []
        while len(self._buf) >= HEADER_BYTES:
            raw, length = _HEADER.unpack_from(self._buf)
            digest = raw.decode("ascii", "replace")
            if not HEX.match(digest):
                raise FrameError("a frame does not start with a lowercase hex SHA-256")
            if length > self._max:
                raise FrameError(f"blob {digest[:12]} is {length} bytes; at most {self._max}")
            if len(self._buf) < HEADER_BYTES + length:
                break
            body = bytes(self._buf[HEADER_BYTES : HEADER_BYTES + length])
            del self._buf[: HEADER_BYTES + length]
            if blob_digest(body) != digest:
                raise FrameError(f"blob {digest[:12]}: its bytes do not have that digest")
            out.append((digest, body))
        return out

    def finish(self) -> None:
        if self._buf:
            raise FrameError(f"{len(self._buf)} bytes after the last whole frame")
