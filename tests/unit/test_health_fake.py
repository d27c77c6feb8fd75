"""agent/health/fake.py: injected faults show as a real GPU would show them, and persist."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agent.gpu.fake import fake_gpus
from corral.agent.health.fake import STATE_FILE, FakeHealth
from corral.wire.health import InjectFault

GPUS = fake_gpus("H100:4", "host").gpus


def fake(tmp_path: Path) -> FakeHealth:
    return FakeHealth(GPUS, tmp_path, clock=lambda: 1000.0)


def test_healthy_by_default(tmp_path: Path) -> None:
    signals, seen = fake(tmp_path).read()
    assert seen == 4
    assert [s.uuid for s in signals] == [g.uuid for g in GPUS]
    g = signals[0]
    assert g.present and g.throttle == [] and g.nvlink_down == [] and g.xids == []
    assert g.ecc_volatile_uncorrected == 0 and g.remapped_rows_failed is False
    assert g.unknown == []


def test_each_fault(tmp_path: Path) -> None:
    f = fake(tmp_path)
    f.apply(InjectFault(kind="xid", gpu=1, xid=145, subcode=7))
    f.apply(InjectFault(kind="ecc_uncorrected", gpu=2))
    f.apply(InjectFault(kind="remap_failed", gpu=2))
    f.apply(InjectFault(kind="remap_pending", gpu=3))
    f.apply(InjectFault(kind="thermal", gpu=0))
    f.apply(InjectFault(kind="nvlink_down", gpu=0))
    f.apply(InjectFault(kind="vanish", gpu=3))
    signals, seen = f.read()
    [xid] = signals[1].xids
    assert (xid.code, xid.subcode, xid.source, xid.at) == (145, 7, "fake", 1000.0)
    assert signals[2].ecc_volatile_uncorrected == 1 and signals[2].remapped_rows_failed
    assert signals[0].throttle == ["hw_thermal"] and signals[0].nvlink_down == [0]
    assert signals[3].present is False and seen == 3


def test_clear_and_reboot(tmp_path: Path) -> None:
    f = fake(tmp_path)
    f.apply(InjectFault(kind="xid", gpu=0, xid=79))
    f.apply(InjectFault(kind="thermal", gpu=0))
    f.apply(InjectFault(kind="thermal", gpu=1))
    f.apply(InjectFault(kind="clear", gpu=0))
    signals, _ = f.read()
    assert signals[0].throttle == [] and signals[1].throttle == ["hw_thermal"]
    assert [x.code for x in signals[0].xids] == [79]  # an Xid of this boot stays
    boot = f.boot_id
    f.apply(InjectFault(kind="reboot"))
    signals, _ = f.read()
    assert f.boot_id != boot
    assert all(s.xids == [] and s.throttle == [] for s in signals)


def test_an_agent_restart_is_not_a_reboot(tmp_path: Path) -> None:
    f = fake(tmp_path)
    f.apply(InjectFault(kind="ecc_uncorrected", gpu=1))
    again = fake(tmp_path)
    assert again.boot_id == f.boot_id
    assert again.read()[0][1].ecc_volatile_uncorrected == 1
    assert (tmp_path / STATE_FILE).exists()


def test_refused_faults_say_why(tmp_path: Path) -> None:
    f = fake(tmp_path)
    with pytest.raises(ValueError, match="gpu 9 does not exist"):
        f.apply(InjectFault(kind="thermal", gpu=9))
    with pytest.raises(ValueError, match="needs the Xid code"):
        f.apply(InjectFault(kind="xid", gpu=0))
    assert f.read()[1] == 4
