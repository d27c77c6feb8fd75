"""What this node has: CPUs, memory, disk (of the state dir's filesystem), GPUs, labels, and
the container runtimes that answer (agent/runtimes.py).

Read once at start-up. `collect` blocks for up to the runtimes' deadline (3 s) when it
asks them itself: call it off the event loop."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil

import corral
from corral.agent import runtimes as container_runtimes
from corral.agent.gpu import nvml
from corral.agent.gpu.base import GpuReport
from corral.agent.gpu.fake import fake_gpus
from corral.wire.agent import ContainerRuntime, Inventory


def detect_gpus(fake: str | None, hostname: str) -> GpuReport:
    return fake_gpus(fake, hostname) if fake is not None else nvml.probe()


def collect(
    state_dir: Path,
    gpus: GpuReport,
    labels: dict[str, str],
    runtimes: list[ContainerRuntime] | None = None,
) -> Inventory:
    """`runtimes`: None asks the host (container_runtimes.detect, blocking)."""
    if runtimes is None:
        runtimes = container_runtimes.detect()
    return Inventory(
        hostname=socket.gethostname(),
        cpus=float(psutil.cpu_count(logical=True) or 1),
        memory_mb=psutil.virtual_memory().total // 2**20,
        disk_mb=psutil.disk_usage(str(state_dir)).total // 2**20,
        gpus=list(gpus.gpus),
        gpu_backend=gpus.backend,
        labels=dict(labels),
        agent_version=corral.__version__,
        runtimes=runtimes,
    )
