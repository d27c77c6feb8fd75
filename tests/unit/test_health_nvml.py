"""agent/health/nvml.py against a stub with pynvml's surface, and the names against pynvml."""

from __future__ import annotations

import ast
import inspect
import queue
import types
from pathlib import Path
from typing import Any

import pynvml

from corral.agent.health import nvml as health_nvml
from corral.agent.health.nvml import NvmlHealth
from corral.wire.agent import Gpu
from corral.wire.health import XidEvent


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


class Timeout(NVMLError):
    pass


class NotFound(NVMLError):
    pass


class Unknown(NVMLError):
    pass


def stub(**overrides: Any) -> types.SimpleNamespace:
    """A pynvml look-alike with two GPUs; GPU-1 has no NVLink; overrides replace functions."""
    events: queue.Queue[Any] = queue.Queue()

    def wait(_set: Any, timeout_ms: int) -> Any:
        try:
            return events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise Timeout() from None

    def nvlink(handle: str, link: int) -> int:
        if handle == "h1" or link >= 4:
            raise NotSupported()
        return 0 if link == 2 else 1

    ns = types.SimpleNamespace(
        NVMLError=NVMLError,
        NVMLError_NotSupported=NotSupported,
        NVMLError_Timeout=Timeout,
        NVMLError_NotFound=NotFound,
        NVML_TEMPERATURE_GPU=0,
        NVML_FEATURE_ENABLED=1,
        NVML_MEMORY_ERROR_TYPE_CORRECTED=0,
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED=1,
        NVML_VOLATILE_ECC=0,
        NVML_AGGREGATE_ECC=1,
        NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS=0,
        NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR=1,
        NVML_NVLINK_MAX_LINKS=18,
        nvmlEventTypeXidCriticalError=0x8,
        nvmlClocksEventReasonHwSlowdown=0x8,
        nvmlClocksEventReasonSwThermalSlowdown=0x20,
        nvmlClocksEventReasonHwThermalSlowdown=0x40,
        nvmlClocksEventReasonHwPowerBrakeSlowdown=0x80,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByUUID=lambda uuid: {"GPU-0": "h0", "GPU-1": "h1"}[uuid],
        nvmlDeviceGetUUID=lambda h: {"h0": b"GPU-0", "h1": "GPU-1"}[h],
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetPciInfo=lambda h: types.SimpleNamespace(
            busId=b"00000000:3B:00.0" if h == "h0" else b"00000000:5E:00.0"
        ),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=80 * 2**30, used=2**30),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=42),
        nvmlDeviceGetTemperature=lambda h, sensor: 61,
        nvmlDeviceGetPowerUsage=lambda h: 350_500,
        # idle (0x1) + sw power cap (0x4) are normal; hw thermal (0x40) hurts
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x1 | 0x4 | 0x40,
        nvmlDeviceGetTotalEccErrors=lambda h, kind, counter: 10 * kind + counter,
        nvmlDeviceGetRemappedRows=lambda h: (0, 1, 0, 1),
        nvmlDeviceGetRetiredPages=lambda h, cause: [1, 2] if cause else [3],
        nvmlDeviceGetNvLinkState=nvlink,
        nvmlDeviceGetPersistenceMode=lambda h: 1,
        nvmlEventSetCreate=lambda: "set",
        nvmlDeviceRegisterEvents=lambda h, kinds, s: None,
        nvmlEventSetWait_v2=wait,
        nvmlEventSetFree=lambda s: None,
        events=events,
    )
    for name, value in overrides.items():
        setattr(ns, name, value)
    return ns


INVENTORY = [
    Gpu(index=0, uuid="GPU-0", model="H100", memory_mb=81920),
    Gpu(index=1, uuid="GPU-1", model="H100", memory_mb=81920),
]


def test_reads_every_signal() -> None:
    signals, seen = NvmlHealth(INVENTORY, stub()).read()
    assert seen == 2
    g = signals[0]
    assert (g.index, g.uuid, g.present) == (0, "GPU-0", True)
    assert g.model == "NVIDIA H100 80GB HBM3"
    assert g.pci_bus_id == "00000000:3B:00.0"
    assert (g.memory_total_mb, g.memory_used_mb) == (81920, 1024)
    assert (g.utilization_pct, g.temperature_c, g.power_w) == (42.0, 61.0, 350.5)
    assert g.throttle == ["hw_thermal"]
    assert g.ecc_volatile_corrected == 0
    assert g.ecc_aggregate_corrected == 1
    assert g.ecc_volatile_uncorrected == 10
    assert g.ecc_aggregate_uncorrected == 11
    assert (g.remapped_rows_pending, g.remapped_rows_failed) == (False, True)
    assert g.retired_pages == 3
    assert g.nvlink_down == [2]
    assert g.persistence_mode is True
    assert g.unknown == []
    assert signals[1].nvlink_down is None  # no link exists: not applicable, not unknown
    assert signals[1].unknown == []


def test_a_failing_read_is_unknown_and_not_supported_is_not() -> None:
    def broken(*_: Any) -> Any:
        raise Unknown("driver said no")

    def unsupported(*_: Any) -> Any:
        raise NotSupported()

    nvml = stub(
        nvmlDeviceGetTemperature=broken,
        nvmlDeviceGetTotalEccErrors=broken,
        nvmlDeviceGetRemappedRows=unsupported,
        nvmlDeviceGetNvLinkState=broken,
    )
    g = NvmlHealth(INVENTORY, nvml).read()[0][0]
    assert g.temperature_c is None
    assert g.remapped_rows_pending is None and g.remapped_rows_failed is None
    assert g.ecc_volatile_uncorrected is None
    assert set(g.unknown) == {
        "temperature",
        "ecc_volatile_corrected",
        "ecc_volatile_uncorrected",
        "ecc_aggregate_corrected",
        "ecc_aggregate_uncorrected",
        "nvlink",
    }
    assert g.power_w == 350.5  # the others were still read


def test_a_gpu_gone_is_not_present_and_no_nvml_is_unknown() -> None:
    def gone(uuid: str) -> str:
        if uuid == "GPU-1":
            raise NotFound()
        return "h0"

    signals, seen = NvmlHealth(
        INVENTORY, stub(nvmlDeviceGetHandleByUUID=gone, nvmlDeviceGetCount=lambda: 1)
    ).read()
    assert [s.present for s in signals] == [True, False]
    assert seen == 1

    def no_driver() -> None:
        raise Unknown("driver not loaded")

    signals, seen = NvmlHealth(INVENTORY, stub(nvmlInit=no_driver)).read()
    assert seen is None
    assert all(s.unknown == ["nvml"] for s in signals)


def test_throttle_reasons_by_the_older_names() -> None:
    nvml = stub(nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: 0x8 | 0x80)
    del nvml.nvmlDeviceGetCurrentClocksEventReasons
    for suffix in ("HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown"):
        setattr(
            nvml,
            "nvmlClocksThrottleReason" + suffix,
            getattr(nvml, "nvmlClocksEventReason" + suffix),
        )
        delattr(nvml, "nvmlClocksEventReason" + suffix)
    g = NvmlHealth(INVENTORY, nvml).read()[0][0]
    assert g.throttle == ["hw_slowdown", "hw_power_brake"]


def test_xid_events_reach_the_sink_with_the_gpu_index() -> None:
    nvml = stub()
    got: queue.Queue[tuple[int, XidEvent]] = queue.Queue()
    health = NvmlHealth(INVENTORY, nvml)
    health.watch_xids(lambda i, e: got.put((i, e)), clock=lambda: 1234.5)
    try:
        nvml.events.put(types.SimpleNamespace(device="h1", eventType=0x8, eventData=79))
        index, event = got.get(timeout=5)
    finally:
        health.close()
    assert index == 1
    assert (event.code, event.source, event.at) == (79, "nvml", 1234.5)


def _names_used() -> set[str]:
    """Every nvml.<name> and nvml constant the module reads (attributes and getattr names)."""
    tree = ast.parse(Path(inspect.getfile(health_nvml)).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        attr = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if attr and node.value.id == "nvml":  # type: ignore[attr-defined]
            names.add(node.attr)  # type: ignore[attr-defined]
        text = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if text and node.value.startswith(("nvml", "NVML")) and node.value.isidentifier():  # type: ignore[attr-defined]
            names.add(node.value)  # type: ignore[attr-defined]
    return names


def test_every_name_used_exists_in_the_real_pynvml() -> None:
    prefixes = {"nvml", "nvmlClocksEventReason", "nvmlClocksThrottleReason"}  # not names
    names = _names_used() - prefixes
    names |= {
        prefix + suffix
        for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason")
        for _, suffix in health_nvml.THROTTLE_REASONS
    }
    assert "nvmlDeviceGetNvLinkState" in names and "NVMLError_NotSupported" in names
    missing = sorted(n for n in names if not hasattr(pynvml, n))
    assert missing == []
