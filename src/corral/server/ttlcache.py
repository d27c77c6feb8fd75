"""A small cache whose entries expire: what a process may trust for a few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Entries live `ttl_s` seconds; past `max_entries` the oldest half is dropped.

    Used from the event loop's thread only (no lock).
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self.max_entries:
            # Insertion order is expiry order (one TTL for all): the first half is oldest.
            for old in list(self._entries)[: self.max_entries // 2]:
                del self._entries[old]
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self.ttl_s, value)

    def clear(self) -> None:
        self._entries.clear()

    def discard(self, key: K) -> None:
        """Forget `key` now (e.g. a revoked token), whatever its time left."""
        self._entries.pop(key, None)
