"""agent/health/node.py on this machine: real disks, memory, processes, boot id."""

from __future__ import annotations

from pathlib import Path

from corral.agent.health import node


def test_node_signals_on_this_machine(tmp_path: Path) -> None:
    signals = node.node_signals({"state": tmp_path, "checkpoint": tmp_path / "missing"})
    assert signals.disks is not None
    [disk] = signals.disks
    assert (disk.role, disk.path) == ("state", str(tmp_path))
    assert 0 < disk.free_mb <= disk.total_mb
    assert signals.unknown == ["disk:checkpoint"]  # a failed read is unknown, never healthy
    assert signals.memory_available_pct is not None
    assert 0 < signals.memory_available_pct <= 100
    assert signals.d_state is not None and signals.d_state >= len(signals.d_state_names)


def test_all_disks_unreadable_is_none(tmp_path: Path) -> None:
    unknown: list[str] = []
    assert node.disks({"workload": tmp_path / "nope"}, unknown) is None
    assert unknown == ["disk:workload"]


def test_boot_id(tmp_path: Path) -> None:
    real = node.boot_id()
    assert real is not None and len(real) == 36
    assert node.boot_id(tmp_path / "missing") is None
