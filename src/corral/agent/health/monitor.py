"""The agent's health check loop: collect signals, publish a report when health changed.

```
 NVML Xid thread ─┐ (nvml backend)           inject(fault) ─► fake backend ─┐
 kernel-log thread┼─► EventBook ── wake ──┐   check_now() ── full ─────────┤
                  │                       ▼                                ▼
                  └────────────── run(): every interval or when woken:
                                  collect (worker thread) → HealthReport
                                  → published if anything health depends on changed,
                                    or full every full_report_s
                                  → next_report(after) wakes each connection's sender
```

The loop runs for the agent's life and outlives connections; a new connection asks for
`next_report(0)` and gets the current report, marked full. Telemetry (utilization,
temperature, power, memory used) is sent but never alone the reason for a report; node
levels (free disk, memory available) count in LEVEL_STEP_PCT steps, D-state processes in
doubling steps, so ordinary churn does not flood the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.gpu.base import GpuReport
from corral.agent.health import node
from corral.agent.health.events import EventBook
from corral.agent.health.fake import FakeHealth
from corral.agent.health.kmsg import KernelLogReader, normalize_pci
from corral.agent.health.node import DiskRole
from corral.agent.health.nvml import NvmlHealth
from corral.wire.health import (
    FULL_REPORT_S,
    MAX_EVENTS,
    GpuSignals,
    HealthReport,
    InjectFault,
    NodeSignals,
    SxidEvent,
    XidEvent,
)

log = logging.getLogger("corral.agent.health")

INTERVAL_S = 2.0
LEVEL_STEP_PCT = 5.0
_TELEMETRY = {"utilization_pct", "temperature_c", "power_w", "memory_used_mb"}


class FaultRefused(Exception):
    """A fault for a node whose GPUs are not fake."""


@dataclass(frozen=True)
class Snapshot:
    gpus: list[GpuSignals]
    gpus_seen: int | None
    node: NodeSignals
    boot_id: str | None


class HealthMonitor:
    def __init__(
        self,
        gpus: GpuReport,
        paths: Mapping[DiskRole, Path],
        state_dir: Path,
        *,
        interval_s: float = INTERVAL_S,
        full_report_s: float = FULL_REPORT_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        node_name: str | None = None,
        nvml: Any | None = None,
        kernel_log: bool = True,
    ) -> None:
        self.backend = gpus.backend
        self.inventory = list(gpus.gpus)
        self.paths = dict(paths)
        self.interval_s = interval_s
        self.full_report_s = full_report_s
        self.clock = clock
        self.monotonic = monotonic
        self.node_name = node_name or socket.gethostname()
        self.book = EventBook()
        self.fake = FakeHealth(self.inventory, state_dir, clock) if self.backend == "fake" else None
        self.nvml = NvmlHealth(self.inventory, nvml) if self.backend == "nvml" else None
        self.kernel = (
            KernelLogReader(self._kernel_xid, self._kernel_sxid)
            if self.backend == "nvml" and kernel_log
            else None
        )
        self._lock = threading.Lock()
        self._unmapped: list[tuple[str, XidEvent]] = []  # kernel Xids whose PCI id is not known yet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._published = asyncio.Event()
        self._force_full = False
        self._seq = 0
        self._latest: HealthReport | None = None
        self._last_key: object = None
        self._last_full: float | None = None

    # -- consumers --------------------------------------------------------------------------

    async def next_report(self, after: int) -> tuple[int, HealthReport]:
        """The latest report if its sequence is above `after`, else the next one. With 0 (a
        new connection): the current report, marked full."""
        while self._latest is None or self._seq <= after:
            self._published.clear()
            await self._published.wait()
        if after == 0:
            return self._seq, self._latest.model_copy(update={"full": True})
        return self._seq, self._latest

    def inject(self, fault: InjectFault) -> None:
        """Show a fault on a fake GPU. Raises FaultRefused on real GPUs, ValueError for a
        fault that does not fit this node (no such GPU, an xid without its code)."""
        if self.fake is None:
            raise FaultRefused(
                f"node {self.node_name} has real GPUs ({self.backend}): "
                "faults can only be injected into fake GPUs"
            )
        self.fake.apply(fault)
        self._wake.set()

    def check_now(self) -> None:
        """Check at once and publish a full report."""
        self._force_full = True
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.nvml is not None:
            self.nvml.watch_xids(self._nvml_xid, self.clock)
        if self.kernel is not None:
            self.kernel.start()
        try:
            while True:
                self._wake.clear()
                try:
                    await self.check()
                except Exception:
                    log.exception("health check failed")  # our bug: keep checking
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval_s):
                        await self._wake.wait()
        finally:
            self.close()

    async def check(self) -> bool:
        """One check; True when it published a report."""
        force, self._force_full = self._force_full, False
        snapshot = await asyncio.to_thread(self.collect)
        now = self.monotonic()
        full = force or self._last_full is None or now - self._last_full >= self.full_report_s
        report = self.build(snapshot, full)
        key = health_key(report)
        if not full and key == self._last_key:
            return False
        if full:
            self._last_full = now
        self._last_key = key
        self._seq += 1
        self._latest = report
        self._published.set()
        return True

    def collect(self) -> Snapshot:
        """Read everything (blocking: run in a worker thread)."""
        gpus: list[GpuSignals] = []
        seen: int | None = 0 if self.backend == "none" else None
        boot_id = node.boot_id()
        if self.fake is not None:
            gpus, seen = self.fake.read()
            boot_id = self.fake.boot_id
        elif self.nvml is not None:
            gpus, seen = self.nvml.read()
        return Snapshot(gpus, seen, node.node_signals(self.paths), boot_id)

    def build(self, snapshot: Snapshot, full: bool) -> HealthReport:
        self._map_kernel_xids(snapshot.gpus)
        gpus = []
        for signals in snapshot.gpus:
            xids = sorted([*signals.xids, *self.book.xids(signals.index)], key=lambda e: e.at)
            gpus.append(signals.model_copy(update={"xids": xids[-MAX_EVENTS:]}))
        unknown = list(snapshot.node.unknown)
        if snapshot.gpus_seen is None:
            unknown.append("gpus_seen")
        if snapshot.boot_id is None:
            unknown.append("boot_id")
        node_signals = snapshot.node.model_copy(
            update={"gpus_seen": snapshot.gpus_seen, "sxids": self.book.sxids(), "unknown": unknown}
        )
        dropped = self.book.dropped + (self.fake.dropped if self.fake is not None else 0)
        return HealthReport(
            sent_at=self.clock(),
            boot_id=snapshot.boot_id or "",
            full=full,
            backend=self.backend,
            gpus=gpus,
            node=node_signals,
            dropped=dropped,
        )

    def close(self) -> None:
        """Stop the event threads (the loop ends with its task's cancellation)."""
        if self.kernel is not None:
            self.kernel.close()
        if self.nvml is not None:
            self.nvml.close()

    # -- events from threads ----------------------------------------------------------------

    def _wake_from_thread(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    def _nvml_xid(self, gpu: int, event: XidEvent) -> None:
        if self.book.add_xid(gpu, event):
            self._wake_from_thread()

    def _kernel_xid(self, pci: str, event: XidEvent) -> None:
        with self._lock:
            self._unmapped.append((pci, event))
            if len(self._unmapped) > MAX_EVENTS:
                del self._unmapped[:-MAX_EVENTS]
        self._wake_from_thread()

    def _kernel_sxid(self, event: SxidEvent) -> None:
        if self.book.add_sxid(event):
            self._wake_from_thread()

    def _map_kernel_xids(self, gpus: list[GpuSignals]) -> None:
        by_pci = {normalize_pci(g.pci_bus_id): g.index for g in gpus if g.pci_bus_id is not None}
        with self._lock:
            waiting, self._unmapped = self._unmapped, []
        for pci, event in waiting:
            index = by_pci.get(pci)
            if index is None:
                with self._lock:
                    self._unmapped.append((pci, event))  # the GPU's PCI id is not read yet
            else:
                self.book.add_xid(index, event)


def health_key(report: HealthReport) -> object:
    """What health depends on: the report less its telemetry, with node levels in steps."""
    gpus = [g.model_dump(exclude=_TELEMETRY) for g in report.gpus]
    n = report.node
    disks = [
        (d.path, d.role, _step(100.0 * d.free_mb / d.total_mb if d.total_mb else 0.0))
        for d in n.disks or []
    ]
    memory = None if n.memory_available_pct is None else _step(n.memory_available_pct)
    stuck = None if n.d_state is None else n.d_state.bit_length()
    node_key = (
        disks if n.disks is not None else None,
        memory,
        stuck,
        n.gpus_seen,
        [s.model_dump() for s in n.sxids],
        sorted(n.unknown),
    )
    return (report.boot_id, report.backend, gpus, node_key, report.dropped)


def _step(pct: float) -> int:
    return int(pct // LEVEL_STEP_PCT)
