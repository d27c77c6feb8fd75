"""Real GPUs through NVML (nvidia-ml-py). No driver, no library: no GPUs, never a crash.

pynvml is imported only when probing, so machines without it import the agent fine.
"""

from __future__ import annotations

import contextlib
from typing import Any

from corral.agent.gpu.base import GpuReport
from corral.wire.agent import Gpu


def probe() -> GpuReport:
    try:
        import pynvml
    except ImportError:
        return GpuReport("none", note="no GPUs: nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ... all mean "none"
        return GpuReport("none", note=f"no GPUs: NVML unavailable ({exc})")
    try:
        gpus = [_device(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception as exc:
        return GpuReport("none", note=f"no GPUs: NVML failed while listing devices ({exc})")
    finally:
        # Shutting down a half-working NVML must not stop the agent.
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    models = sorted({g.model for g in gpus})
    return GpuReport("nvml", gpus, f"NVML: {len(gpus)} GPU(s) {', '.join(models)}".rstrip())


def _device(nvml: Any, index: int) -> Gpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return Gpu(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        model=_text(nvml.nvmlDeviceGetName(handle)),
        memory_mb=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // 2**20,
    )


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode() if isinstance(value, bytes) else value
