"""Node checks: free disk by role, memory available, processes stuck in D state, boot id.

Each check is guarded: a failed one leaves its field None and is named in `unknown`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import psutil

from corral.wire.health import DiskUse, NodeSignals

DiskRole = Literal["workload", "checkpoint", "state"]
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MAX_D_STATE_NAMES = 16


def disks(paths: Mapping[DiskRole, Path], unknown: list[str]) -> list[DiskUse] | None:
    found: list[DiskUse] = []
    for role, path in paths.items():
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            unknown.append(f"disk:{role}")
            continue
        found.append(
            DiskUse(
                path=str(path),
                role=role,
                free_mb=usage.free // 2**20,
                total_mb=usage.total // 2**20,
            )
        )
    return found if found or not paths else None


def memory_available_pct(unknown: list[str]) -> float | None:
    try:
        memory = psutil.virtual_memory()
        return round(100.0 * memory.available / memory.total, 1)
    except (OSError, ZeroDivisionError, psutil.Error):
        unknown.append("memory")
        return None


def d_state(unknown: list[str]) -> tuple[int | None, list[str]]:
    """How many processes are in uninterruptible sleep, and the first few names."""
    count = 0
    names: list[str] = []
    try:
        for proc in psutil.process_iter(attrs=["status", "name"]):
            if proc.info.get("status") != psutil.STATUS_DISK_SLEEP:
                continue
            count += 1
            if len(names) < MAX_D_STATE_NAMES:
                names.append(str(proc.info.get("name") or "?")[:64])
    except (OSError, psutil.Error):
        unknown.append("d_state")
        return None, []
    return count, names


def boot_id(path: Path = BOOT_ID) -> str | None:
    try:
        return path.read_text().strip()[:64] or None
    except OSError:
        return None


def node_signals(paths: Mapping[DiskRole, Path]) -> NodeSignals:
    """The node's own signals (gpus_seen and SXids are the monitor's to add)."""
    unknown: list[str] = []
    found_disks = disks(paths, unknown)
    memory = memory_available_pct(unknown)
    stuck, names = d_state(unknown)
    return NodeSignals(
        disks=found_disks,
        memory_available_pct=memory,
        d_state=stuck,
        d_state_names=names,
        unknown=unknown,
    )
