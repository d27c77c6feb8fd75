"""agent/health/monitor.py: the loop publishes on change, full on its period, and on ask."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec

import pytest

from corral.agent.gpu.base import GpuReport
from corral.agent.gpu.fake import fake_gpus
from corral.agent.health.events import EventBook
from corral.agent.health.monitor import FaultRefused, HealthMonitor
from corral.wire.health import InjectFault, XidEvent

P = ParamSpec("P")


def in_loop(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test in its own event loop (no asyncio plugin in this project)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def monitor(tmp_path: Path, clock: Clock, spec: str = "H100:8") -> HealthMonitor:
    return HealthMonitor(
        fake_gpus(spec, "host"),
        {"state": tmp_path},
        tmp_path,
        interval_s=0.05,
        full_report_s=15.0,
        monotonic=clock,
        node_name="n1",
    )


@in_loop
async def test_fault_publishes_a_change_and_repeats_publish_nothing(tmp_path: Path) -> None:
    clock = Clock()
    m = monitor(tmp_path, clock)
    task = asyncio.create_task(m.run())
    try:
        async with asyncio.timeout(5):
            seq, first = await m.next_report(0)
        assert first.full and first.backend == "fake" and len(first.gpus) == 8
        m.inject(InjectFault(kind="xid", gpu=3, xid=79))
        async with asyncio.timeout(5):
            seq2, change = await m.next_report(seq)
        assert seq2 > seq and not change.full
        assert [x.code for x in change.gpus[3].xids] == [79]
        # The loop keeps checking every 0.05 s: nothing changed, so nothing new...
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await m.next_report(seq2)
        # ...until the full-report period has passed.
        clock.now += 15.0
        async with asyncio.timeout(5):
            seq3, full = await m.next_report(seq2)
        assert full.full and [x.code for x in full.gpus[3].xids] == [79]
        m.check_now()
        async with asyncio.timeout(5):
            _, asked = await m.next_report(seq3)
        assert asked.full
    finally:
        task.cancel()


@in_loop
async def test_checks_directly(tmp_path: Path) -> None:
    clock = Clock()
    m = monitor(tmp_path, clock, "H100:2")
    assert await m.check()  # the first is full
    assert not await m.check()
    m.inject(InjectFault(kind="vanish", gpu=1))
    assert await m.check()
    _, report = await m.next_report(0)
    assert report.node.gpus_seen == 1 and report.gpus[1].present is False
    assert report.full  # a new connection gets the current one, marked full


@in_loop
async def test_real_gpus_refuse_faults(tmp_path: Path) -> None:
    m = HealthMonitor(GpuReport("nvml"), {}, tmp_path, node_name="n1", kernel_log=False)
    with pytest.raises(FaultRefused, match="node n1 has real GPUs \\(nvml\\)"):
        m.inject(InjectFault(kind="thermal", gpu=0))


@in_loop
async def test_no_gpus_reports_node_signals_only(tmp_path: Path) -> None:
    m = HealthMonitor(GpuReport("none"), {"workload": tmp_path}, tmp_path)
    assert await m.check()
    _, report = await m.next_report(0)
    assert report.gpus == [] and report.node.gpus_seen == 0
    assert report.node.disks is not None and report.boot_id


def test_nvml_and_kernel_copies_of_one_xid_are_one_event() -> None:
    book = EventBook()
    assert book.add_xid(0, XidEvent(code=79, at=10.0, source="nvml"))
    assert book.add_xid(0, XidEvent(code=79, at=12.0, source="kmsg", detail="pid=1"))
    assert not book.add_xid(0, XidEvent(code=79, at=13.0, source="nvml"))
    assert [(x.source, x.detail) for x in book.xids(0)] == [("kmsg", "pid=1")]
    assert book.add_xid(0, XidEvent(code=79, at=30.0, source="nvml"))  # later: a new one
    for i in range(100):
        book.add_xid(1, XidEvent(code=13, at=100.0 + 10 * i, source="kmsg"))
    assert len(book.xids(1)) == 64 and book.dropped == 36


@in_loop
async def test_one_check_with_eight_fake_gpus_is_cheap(tmp_path: Path) -> None:
    m = monitor(tmp_path, Clock())
    started = time.perf_counter()
    for _ in range(10):
        await m.check()
    per_check = (time.perf_counter() - started) / 10
    print(f"one health check, 8 fake GPUs: {per_check * 1000:.1f} ms")
    assert per_check < 0.5
