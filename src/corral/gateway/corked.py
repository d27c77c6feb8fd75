"""Corked writes, shared by both sides of the proxy (client and upstream connections).

While the event loop's callbacks for one batch of reads run, writes are queued per
connection (`Context.corked`) and each connection is flushed once at the end: many small
chunks become one transport write.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.gateway.exchange import Context


class CorkedWriter:
    ctx: Context
    pending: list[bytes]
    transport: asyncio.Transport | None
    closed: bool

    def write(self, data: bytes) -> None:
        if self.ctx.corked:
            if not self.pending:
                self.ctx.dirty.append(self)
            self.pending.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def writelines(self, data: tuple[bytes, ...]) -> None:
        if self.ctx.corked:
            if not self.pending:
                self.ctx.dirty.append(self)
            self.pending.extend(data)
        elif self.transport is not None and not self.closed:
            self.transport.writelines(data)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if pending and self.transport is not None and not self.closed:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
