"""The gateway route table's version, and the wake-up its long polls wait on.

The table is computed from the store on demand; this board only says when to look again.
A change that may alter routes pokes it; a long poll also looks again every `RECHECK_S`, so a
change no code path announced is still seen within that bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from corral.timeouts import wait_event

RECHECK_S = 1.0


class RouteBoard:
    """Lives on the event loop's thread; other threads poke it with call_soon_threadsafe."""

    def __init__(self) -> None:
        # Grows across server restarts too, so a gateway's `after=` never looks newer.
        self.version = int(time.time() * 1000)
        self._digest = ""
        # Counts pokes: a poll notes it before reading the store, so a poke that lands
        # while it reads is not lost.
        self.generation = 0
        self._changed = asyncio.Event()

    def observe(self, content: bytes) -> int:
        """The version for a table whose (version-free) content is `content`."""
        digest = hashlib.sha256(content).hexdigest()
        if digest != self._digest:
            self._digest = digest
            self.version += 1
        return self.version

    def poke(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> None:
        """Return once poked after generation `seen`, or after `timeout` seconds."""
        if self.generation != seen:
            return
        await wait_event(self._changed, timeout)
