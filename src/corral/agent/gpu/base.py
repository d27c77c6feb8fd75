"""What a GPU source reports: the backend that found them, and the GPUs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from corral.wire.agent import Gpu

GpuBackend = Literal["nvml", "fake", "none"]


@dataclass(frozen=True)
class GpuReport:
    backend: GpuBackend
    gpus: list[Gpu] = field(default_factory=list)
    note: str = ""  # for the agent's log: why there are none, or that they are fake
