"""The Xid and SXid events of this boot, as the monitor keeps them between reports.

Events are level-triggered: every report carries all of them (bounded: the last
MAX_EVENTS per GPU and per node, the rest counted). NVML and the kernel log report the
same Xid: one of each on the same GPU with the same code within DUPLICATE_S is one event,
and the kernel log's is kept (it has the pid, process name and the driver's words).
Thread-safe: the NVML and kernel-log threads add, the event loop reads.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from corral.wire.health import MAX_EVENTS, SxidEvent, XidEvent

DUPLICATE_S = 5.0


class EventBook:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._xids: dict[int, list[XidEvent]] = defaultdict(list)
        self._sxids: list[SxidEvent] = []
        self._dropped = 0

    def add_xid(self, gpu: int, event: XidEvent) -> bool:
        """Keep the event; False when it was one already kept."""
        with self._lock:
            kept = self._xids[gpu]
            for i, old in enumerate(kept):
                if old.code != event.code or abs(old.at - event.at) > DUPLICATE_S:
                    continue
                if old.source == event.source and old.at != event.at:
                    continue  # the same Xid twice, seconds apart: two events
                if old.source == "nvml" and event.source == "kmsg":
                    kept[i] = event
                    return True
                return False
            kept.append(event)
            kept.sort(key=lambda e: e.at)
            if len(kept) > MAX_EVENTS:
                self._dropped += len(kept) - MAX_EVENTS
                del kept[:-MAX_EVENTS]
            return True

    def add_sxid(self, event: SxidEvent) -> bool:
        with self._lock:
            if event in self._sxids:
                return False
            self._sxids.append(event)
            if len(self._sxids) > MAX_EVENTS:
                self._dropped += len(self._sxids) - MAX_EVENTS
                del self._sxids[:-MAX_EVENTS]
            return True

    def xids(self, gpu: int) -> list[XidEvent]:
        with self._lock:
            return list(self._xids.get(gpu, ()))

    def sxids(self) -> list[SxidEvent]:
        with self._lock:
            return list(self._sxids)

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped
