"""Following replicas' output.log files and cutting them into LogChunks.

A chunk holds at most CHUNK_BYTES raw bytes and ends on a UTF-8 character boundary, so each
decodes on its own; `nbytes` counts raw bytes, which is what offsets are made of. While a
replica runs, an incomplete character at the end of the file is held back until the rest
arrives; once it has exited, whatever is there is sent (undecodable bytes become U+FFFD).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from corral.wire.agent import LogChunk

log = logging.getLogger("corral.agent.logs")

CHUNK_BYTES = 64 * 1024


def utf8_boundary(data: bytes, *, final: bool) -> int:
    """How many leading bytes of `data` end on a character boundary (all of them if final)."""
    if final:
        return len(data)
    # A UTF-8 character is at most 4 bytes: only the last 3 can be an unfinished one.
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0b1100_0000 == 0b1000_0000:
            continue  # a continuation byte: its lead is further back
        if byte < 0b1000_0000:
            return len(data)
        need = 2 if byte >= 0b1100_0000 else 1
        if byte >= 0b1110_0000:
            need = 3
        if byte >= 0b1111_0000:
            need = 4
        return len(data) - back if back < need else len(data)
    return len(data)  # no lead byte in reach: not UTF-8 anyway, send it as it is


def split_chunks(data: bytes, *, final: bool, limit: int = CHUNK_BYTES) -> list[bytes]:
    """Cut `data` into pieces of at most `limit` bytes at character boundaries.

    Unless `final`, a trailing incomplete character is left out (the caller reads it again).
    """
    pieces: list[bytes] = []
    start = 0
    while start < len(data):
        window = data[start : start + limit]
        last = start + len(window) >= len(data)
        cut = utf8_boundary(window, final=final and last)
        if cut == 0:
            if last:
                break  # only part of a character is left: wait for the rest
            cut = len(window)  # 'limit' bytes without a boundary: not text, cut anywhere
        pieces.append(window[:cut])
        start += cut
    return pieces


@dataclass
class _Tail:
    path: Path
    offset: int
    file: BinaryIO | None = None


class LogTailer:
    """Follows the logs the server asked for on this connection, from where it left off."""

    def __init__(self, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self._tails: dict[str, _Tail] = {}

    def follow(self, replica_id: str, path: Path, offset: int) -> None:
        if replica_id not in self._tails:
            self._tails[replica_id] = _Tail(path, offset)

    def following(self, replica_id: str) -> bool:
        return replica_id in self._tails

    def replica_ids(self) -> list[str]:
        return list(self._tails)

    def read(self, replica_id: str, *, final: bool, budget: int) -> list[LogChunk]:
        """New chunks of one log, at most about `budget` bytes of them.

        With `final`, the log is complete: after its last chunk it is no longer followed.
        """
        tail = self._tails.get(replica_id)
        if tail is None:
            return []
        data, at_end = self._read(tail, budget)
        complete = final and at_end
        pieces = split_chunks(data, final=complete, limit=self.chunk_bytes)
        chunks: list[LogChunk] = []
        for piece in pieces:
            chunks.append(
                LogChunk(
                    replica_id=replica_id,
                    offset=tail.offset,
                    nbytes=len(piece),
                    data=piece.decode("utf-8", errors="replace"),
                )
            )
            tail.offset += len(piece)
        if complete:
            self.forget(replica_id)
        return chunks

    def forget(self, replica_id: str) -> None:
        tail = self._tails.pop(replica_id, None)
        if tail is not None and tail.file is not None:
            tail.file.close()

    def close(self) -> None:
        for replica_id in list(self._tails):
            self.forget(replica_id)

    def _read(self, tail: _Tail, budget: int) -> tuple[bytes, bool]:
        """Up to `budget` bytes from the tail's offset, and whether they reach the end."""
        if tail.file is None:
            try:
                tail.file = open(tail.path, "rb")  # noqa: SIM115 - kept open between polls
            except FileNotFoundError:
                return b"", True  # the shim has not created it yet
        size = os.fstat(tail.file.fileno()).st_size
        if size <= tail.offset:
            if size < tail.offset:
                log.debug("%s is shorter than the server's offset %d", tail.path, tail.offset)
            return b"", True
        tail.file.seek(tail.offset)
        data = tail.file.read(min(size - tail.offset, budget))
        return data, tail.offset + len(data) >= size
