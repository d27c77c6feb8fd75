"""A fake GPU inventory (`--fake-gpus H100:8`) for trying corral on a machine without GPUs.

The fake never touches a device: it only makes the node advertise GPUs, so placement,
CUDA_VISIBLE_DEVICES and torchrun variables can be exercised. Logs say FAKE loudly.
"""

from __future__ import annotations

import re

from corral.agent.gpu.base import GpuReport
from corral.wire.agent import Gpu

MAX_FAKE_GPUS = 1024
_GIB = 1024
# Memory per GPU by model, for plausible inventories; unknown models get DEFAULT_MEMORY_MB.
MEMORY_MB = {
    "H100": 80 * _GIB,
    "H200": 141 * _GIB,
    "A100": 80 * _GIB,
    "L40S": 48 * _GIB,
    "L4": 24 * _GIB,
}
DEFAULT_MEMORY_MB = 16 * _GIB
_SPEC = re.compile(r"^(?P<model>[A-Za-z][\w.-]*)(?::(?P<count>[+-]?\d+))?$")


def parse_fake_gpus(spec: str) -> tuple[str, int]:
    """`H100:8` -> ("H100", 8); `L4` is one L4. Raises ValueError with what was expected."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise ValueError(f"{spec!r} is not MODEL:COUNT, e.g. H100:8")
    count = int(match.group("count") or 1)
    if not 0 <= count <= MAX_FAKE_GPUS:
        raise ValueError(f"{spec!r}: the count must be between 0 and {MAX_FAKE_GPUS}")
    return match.group("model").upper(), count


def fake_gpus(spec: str, hostname: str) -> GpuReport:
    model, count = parse_fake_gpus(spec)
    memory = MEMORY_MB.get(model, DEFAULT_MEMORY_MB)
    gpus = [
        Gpu(index=i, uuid=f"FAKE-{hostname}-{i}", model=model, memory_mb=memory)
        for i in range(count)
    ]
    return GpuReport(
        "fake", gpus, f"FAKE GPUs: {count} x {model} ({memory // _GIB} GiB), no real device"
    )
