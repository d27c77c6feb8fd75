"""Per-GPU health signals and Xid events through NVML (nvidia-ml-py).

Every read is guarded: a failing call leaves its field None and names the signal in the
GPU's `unknown`; NotSupported (or a function this driver lacks) means "not applicable" and
is None without being unknown. Nothing here raises.

The pynvml module is passed in (tests give a stub with the same surface) or imported lazily,
so a machine without it imports the agent fine.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from corral.wire.agent import Gpu
from corral.wire.health import TEXT_MAX, GpuSignals, XidEvent

log = logging.getLogger("corral.agent.health")

T = TypeVar("T")
XidSink = Callable[[int, XidEvent], None]  # (GPU index, event); called from the event thread

# The clock-event reasons that mean the GPU is being held back by something wrong; idle,
# application clocks, power cap and sync boost are normal operation.
THROTTLE_REASONS = (
    ("hw_slowdown", "HwSlowdown"),
    ("sw_thermal", "SwThermalSlowdown"),
    ("hw_thermal", "HwThermalSlowdown"),
    ("hw_power_brake", "HwPowerBrakeSlowdown"),
)
EVENT_WAIT_MS = 1000  # how long the event thread blocks before looking at its stop flag


def load() -> Any | None:
    """The pynvml module, or None when nvidia-ml-py is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def throttle_bit(nvml: Any, suffix: str) -> int:
    # Newer nvidia-ml-py names them ClocksEventReason; older ones only ClocksThrottleReason.
    for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
        value = getattr(nvml, prefix + suffix, None)
        if value is not None:
            return int(value)
    return 0


def errors(nvml: Any, *names: str) -> tuple[type[BaseException], ...]:
    """The module's NVMLError subclasses of those names (pynvml makes them at import)."""
    found = [getattr(nvml, name, None) for name in names]
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))


class _Reads:
    """Guarded reads for one GPU: failures are collected in `unknown`."""

    def __init__(self, nvml: Any, not_applicable: tuple[type[BaseException], ...]) -> None:
        self.nvml = nvml
        self.not_applicable = not_applicable
        self.unknown: list[str] = []

    def get(self, name: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except self.not_applicable:
            return None
        except Exception:
            self.unknown.append(name)
            return None


class NvmlHealth:
    """Reads GpuSignals for the inventory's GPUs; watches Xid events in a daemon thread."""

    def __init__(self, inventory: list[Gpu], nvml: Any | None = None) -> None:
        self.inventory = list(inventory)
        self._nvml = nvml
        self._ready = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading -----------------------------------------------------------------------------

    def _init(self) -> Any | None:
        if self._ready:
            return self._nvml
        if self._nvml is None:
            self._nvml = load()
        if self._nvml is None:
            return None
        try:
            self._nvml.nvmlInit()
        except Exception as exc:
            log.warning("NVML unavailable for health checks: %s", exc)
            return None
        self._ready = True
        return self._nvml

    def read(self) -> tuple[list[GpuSignals], int | None]:
        """Signals per inventory GPU, and how many GPUs NVML finds now (None: unknown)."""
        nvml = self._init()
        if nvml is None:
            return [
                GpuSignals(index=g.index, uuid=g.uuid, unknown=["nvml"]) for g in self.inventory
            ], None
        not_applicable = errors(nvml, "NVMLError_NotSupported", "NVMLError_FunctionNotFound")
        signals = [self._gpu(nvml, not_applicable, g) for g in self.inventory]
        try:
            seen: int | None = int(nvml.nvmlDeviceGetCount())
        except Exception:
            seen = None
        return signals, seen

    def _gpu(
        self, nvml: Any, not_applicable: tuple[type[BaseException], ...], gpu: Gpu
    ) -> GpuSignals:
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
        except Exception as exc:
            if isinstance(exc, errors(nvml, "NVMLError_NotFound", "NVMLError_GpuIsLost")):
                return GpuSignals(index=gpu.index, uuid=gpu.uuid, present=False)
            return GpuSignals(index=gpu.index, uuid=gpu.uuid, unknown=["device"])
        r = _Reads(nvml, not_applicable)
        h = handle
        memory = r.get("memory", lambda: nvml.nvmlDeviceGetMemoryInfo(h))
        power_mw = r.get("power", lambda: nvml.nvmlDeviceGetPowerUsage(h))
        signals = GpuSignals(
            index=gpu.index,
            uuid=gpu.uuid,
            model=r.get("model", lambda: text(nvml.nvmlDeviceGetName(h))),
            pci_bus_id=r.get("pci_bus_id", lambda: text(nvml.nvmlDeviceGetPciInfo(h).busId)),
            memory_total_mb=None if memory is None else int(memory.total) // 2**20,
            memory_used_mb=None if memory is None else int(memory.used) // 2**20,
            utilization_pct=r.get(
                "utilization", lambda: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            ),
            temperature_c=r.get(
                "temperature",
                lambda: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            ),
            power_w=None if power_mw is None else float(power_mw) / 1000.0,
            throttle=r.get("throttle", lambda: self._throttle(nvml, h)),
            ecc_volatile_corrected=r.get(
                "ecc_volatile_corrected", lambda: _ecc(nvml, h, False, False)
            ),
            ecc_volatile_uncorrected=r.get(
                "ecc_volatile_uncorrected", lambda: _ecc(nvml, h, True, False)
            ),
            ecc_aggregate_corrected=r.get(
                "ecc_aggregate_corrected", lambda: _ecc(nvml, h, False, True)
            ),
            ecc_aggregate_uncorrected=r.get(
                "ecc_aggregate_uncorrected", lambda: _ecc(nvml, h, True, True)
            ),
            retired_pages=r.get("retired_pages", lambda: _retired_pages(nvml, h)),
            nvlink_down=r.get("nvlink", lambda: _nvlink_down(nvml, h, not_applicable)),
            persistence_mode=r.get(
                "persistence_mode",
                lambda: nvml.nvmlDeviceGetPersistenceMode(h) == nvml.NVML_FEATURE_ENABLED,
            ),
        )
        remapped = r.get("remapped_rows", lambda: nvml.nvmlDeviceGetRemappedRows(h))
        if remapped is not None:
            signals.remapped_rows_pending = bool(remapped[2])
            signals.remapped_rows_failed = bool(remapped[3])
        signals.unknown = r.unknown
        return signals

    def _throttle(self, nvml: Any, handle: Any) -> list[str]:
        get = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if get is None:
            get = nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        bits = int(get(handle))
        return [name for name, suffix in THROTTLE_REASONS if bits & throttle_bit(nvml, suffix)]

    # -- Xid events --------------------------------------------------------------------------

    def watch_xids(self, sink: XidSink, clock: Callable[[], float] = time.time) -> None:
        """Start the daemon thread that passes every critical Xid to `sink`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._watch, args=(sink, clock), name="nvml-xid", daemon=True
        )
        self._thread.start()

    def _watch(self, sink: XidSink, clock: Callable[[], float]) -> None:
        nvml = self._init()
        if nvml is None:
            return
        try:
            events = nvml.nvmlEventSetCreate()
        except Exception as exc:
            log.warning("NVML Xid events unavailable: %s", exc)
            return
        try:
            by_uuid = self._register(nvml, events)
            if by_uuid:
                self._wait(nvml, events, by_uuid, sink, clock)
        finally:
            with contextlib.suppress(Exception):
                nvml.nvmlEventSetFree(events)

    def _register(self, nvml: Any, events: Any) -> dict[str, int]:
        by_uuid: dict[str, int] = {}
        for gpu in self.inventory:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, events)
            except Exception as exc:
                log.warning(
                    "GPU %d: no NVML Xid events (%s); the kernel log still has them", gpu.index, exc
                )
                continue
            by_uuid[gpu.uuid] = gpu.index
        return by_uuid

    def _wait(
        self,
        nvml: Any,
        events: Any,
        by_uuid: dict[str, int],
        sink: XidSink,
        clock: Callable[[], float],
    ) -> None:
        timeout_cls = errors(nvml, "NVMLError_Timeout")
        while not self._stop.is_set():
            try:
                data = nvml.nvmlEventSetWait_v2(events, EVENT_WAIT_MS)
            except timeout_cls:
                continue
            except Exception as exc:
                log.warning("waiting for NVML events failed: %s", exc)
                self._stop.wait(EVENT_WAIT_MS / 1000)
                continue
            if not int(data.eventType) & int(nvml.nvmlEventTypeXidCriticalError):
                continue
            try:
                index = by_uuid.get(text(nvml.nvmlDeviceGetUUID(data.device)))
            except Exception:
                index = None
            if index is None:
                log.warning("NVML Xid %d on a GPU not in the inventory", int(data.eventData))
                continue
            code = int(data.eventData)
            sink(
                index,
                XidEvent(code=code, at=clock(), source="nvml", detail=f"Xid {code}"[:TEXT_MAX]),
            )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * EVENT_WAIT_MS / 1000)
        if self._ready and self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._ready = False


def _ecc(nvml: Any, handle: Any, uncorrected: bool, aggregate: bool) -> int:
    kind = (
        nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        if uncorrected
        else nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
    )
    counter = nvml.NVML_AGGREGATE_ECC if aggregate else nvml.NVML_VOLATILE_ECC
    return int(nvml.nvmlDeviceGetTotalEccErrors(handle, kind, counter))


def _retired_pages(nvml: Any, handle: Any) -> int:
    causes = (
        nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
        nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
    )
    return sum(len(nvml.nvmlDeviceGetRetiredPages(handle, cause)) for cause in causes)


def _nvlink_down(
    nvml: Any, handle: Any, not_applicable: tuple[type[BaseException], ...]
) -> list[int] | None:
    """Links that exist and are down; None when the GPU has no NVLink at all."""
    # Some drivers answer InvalidArgument rather than NotSupported past the last link.
    missing = (*not_applicable, *errors(nvml, "NVMLError_InvalidArgument"))
    down: list[int] = []
    exists = False
    for link in range(int(nvml.NVML_NVLINK_MAX_LINKS)):
        try:
            state = nvml.nvmlDeviceGetNvLinkState(handle, link)
        except missing:
            continue  # no such link on this GPU
        exists = True
        if state != nvml.NVML_FEATURE_ENABLED:
            down.append(link)
    return down if exists else None
