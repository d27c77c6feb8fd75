"""The gateway route table's version, and the wake-up its long polls wait on.

The table is computed from the store on demand; this board only says when to look again.
A change that may alter routes sets the event; a long poll also looks again every
`RECHECK_S`, so a change no code path announced is still seen within that bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time

RECHECK_S = 1.0


class RouteBoard:
    def __init__(self) -> None:
        # Grows across server restarts too, so a gateway's `after=` never looks newer.
        self.version = int(time.time() * 1000)
        self._digest = ""
        self.changed = asyncio.Event()

    def observe(self, content: bytes) -> int:
        """The version for a table whose (version-free) content is `content`."""
        digest = hashlib.sha256(content).hexdigest()
        if digest != self._digest:
            self._digest = digest
            self.version += 1
        return self.version

    def poke(self) -> None:
        self.changed.set()

    async def wait(self, timeout: float) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)
