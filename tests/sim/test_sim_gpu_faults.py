"""GPU faults in the simulator: the Llama 3 mix drawn as Xids and signals, and what happens
to the node decided by core.health, the rules the control plane runs."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from corral.core.health import Health, HealthFacts, Repair, assess, xid_rule
from corral.core.recovery import RecoveryPolicy
from corral.sim.ettr import EttrOptions, simulate
from corral.sim.failures import LLAMA3_405B, Failure, FailureProfile, NodeFailures
from corral.sim.gpu_faults import GPU_FAULT_BY_CAUSE, GPU_FAULTS, REPAIR_S, FaultSignal
from corral.wire.health import GpuSignals, HealthReport, XidEvent

GPU_CAUSES = [c for c in LLAMA3_405B.causes if c.per_gpu]


def only(cause_name: str, count: int = 400) -> FailureProfile:
    """The profile with one cause left, made frequent."""
    cause = next(c for c in LLAMA3_405B.causes if c.name == cause_name)
    return replace(LLAMA3_405B, causes=(replace(cause, count=count),))


def draws(profile: FailureProfile, n: int, seed: int = 1) -> list[Failure]:
    out: list[Failure] = []
    for node in range(n // 20 + 1):
        process = NodeFailures(profile, f"n{node}", 8, seed)
        t = 0.0
        for _ in range(20):
            f = process.next(t)
            assert f is not None
            out.append(f)
            t = f.at + f.repair_s
    return out[:n]


def judged_here(signal: FaultSignal) -> HealthFacts:
    """The test's own facts for a node whose GPU 3 shows `signal` (not the module's)."""
    gpus = [GpuSignals(index=i, uuid=f"u{i}") for i in range(8)]
    gpus[3] = GpuSignals(
        index=3,
        uuid="u3",
        throttle=list(signal.throttle),
        remapped_rows_failed=signal.remapped_rows_failed,
        xids=[XidEvent(code=c, at=5.0, source="nvml") for c in signal.xids],
    )
    report = HealthReport(sent_at=5.0, boot_id="b1", gpus=gpus)
    return HealthFacts(report=report, inventory=tuple((i, f"u{i}") for i in range(8)))


def test_the_table_has_a_row_for_every_gpu_cause_of_the_profile() -> None:
    assert {c.name for c in GPU_CAUSES} == set(GPU_FAULT_BY_CAUSE)
    assert len(GPU_FAULTS) == len(GPU_CAUSES) == 6
    for row in GPU_FAULTS:
        assert row.why and all(w > 0 for _, w in row.signals)
        for signal, _ in row.signals:
            for code in signal.xids:
                assert xid_rule(code) is not None, f"Xid {code} unknown to core.health"


@pytest.mark.parametrize("cause", [c.name for c in GPU_CAUSES])
def test_a_drawn_fault_gets_the_repair_core_health_gives_it(cause: str) -> None:
    row = GPU_FAULT_BY_CAUSE[cause]
    failures = draws(only(cause), 200)
    seen = set()
    for f in failures:
        assert f.fault is not None
        signal = f.fault.signal
        assert signal in {s for s, _ in row.signals}
        seen.add(signal)
        verdict = assess(judged_here(signal))
        assert f.fault.repair is verdict.repair
        assert f.fault.health is verdict.health
        assert f.fault.takes_work is verdict.takes_work
        if verdict.repair in (Repair.REBOOT_NODE, Repair.RESET_GPU):
            assert f.repair_s == REPAIR_S[verdict.repair]
        elif verdict.repair is not Repair.INSPECT_HARDWARE and verdict.takes_work:
            assert f.repair_s == 0.0  # the node stays in the pool
    assert seen == {s for s, _ in row.signals}, "every option of the row is drawn"


def test_the_verdicts_the_table_leads_to() -> None:
    verdicts = {
        cause: {assess(judged_here(s)).repair for s, _ in row.signals}
        for cause, row in GPU_FAULT_BY_CAUSE.items()
    }
    # Xid 79 first seen in a boot: reboot (inspect only if it comes back after the reboot).
    assert verdicts["faulty GPU"] == {Repair.REBOOT_NODE}
    assert verdicts["GPU HBM3 memory"] == {Repair.REBOOT_NODE, Repair.INSPECT_HARDWARE}
    assert verdicts["GPU system processor"] == {Repair.REBOOT_NODE}
    assert verdicts["silent data corruption"] == {Repair.NONE}  # nothing shows it
    thermal = assess(judged_here(GPU_FAULT_BY_CAUSE["GPU thermal interface/sensor"].signals[0][0]))
    assert (thermal.health, thermal.takes_work) == (Health.DEGRADED, True)


def test_inspect_hardware_stays_out_for_the_hardware_time_and_a_reboot_for_minutes() -> None:
    hbm = only("GPU HBM3 memory")
    failures = draws(hbm, 1000)
    reboots = [f.repair_s for f in failures if f.fault and f.fault.repair is Repair.REBOOT_NODE]
    inspects = [
        f.repair_s for f in failures if f.fault and f.fault.repair is Repair.INSPECT_HARDWARE
    ]
    assert reboots and set(reboots) == {600.0}
    # Exponential with the cause's hardware repair time as mean (4 h): 3 standard errors.
    mean = hbm.causes[0].repair_s
    assert len(inspects) > 100
    assert abs(statistics.mean(inspects) - mean) < 3 * mean / len(inspects) ** 0.5
    thermal = draws(only("GPU thermal interface/sensor"), 50)
    assert all(f.repair_s == 0.0 for f in thermal)


def test_the_ettr_run_keeps_nodes_out_as_long_as_their_repair() -> None:
    # Recovery's own exclusion (1 h by default) would hide a 10-minute reboot: make it short.
    o = EttrOptions(
        nodes=64,
        spares=4,
        days=10,
        profile=replace(only("GPU HBM3 memory"), nodes=64),
        policy=RecoveryPolicy(exclude_s=1.0),
    )
    r = simulate(o)
    by_repair = {
        repair: [x.back_at - x.at for x in r.outages if x.repair == repair]
        for repair in ("reboot-node", "inspect-hardware")
    }
    assert len(by_repair["reboot-node"]) > 20
    assert set(by_repair["reboot-node"]) == {600.0}
    assert len(by_repair["inspect-hardware"]) > 5
    assert statistics.mean(by_repair["inspect-hardware"]) > 3600.0
    assert sum(r.repairs.values()) == len(r.outages)


def test_a_throttled_gpu_is_counted_and_the_job_runs_on() -> None:
    thermal = replace(only("GPU thermal interface/sensor", 80), nodes=64)
    o = EttrOptions(nodes=64, spares=4, days=10, profile=thermal)
    r = simulate(o)
    assert r.degraded["GPU thermal interface/sensor"] > 5  # ~15 expected
    assert sum(r.interruptions.values()) == 0 and r.outages == ()
    assert r.repairs == {"none": r.degraded["GPU thermal interface/sensor"]}


def test_the_draw_is_seeded() -> None:
    hbm = only("GPU HBM3 memory")
    a = [f.fault for f in draws(hbm, 100, seed=1)]
    assert a == [f.fault for f in draws(hbm, 100, seed=1)]
    assert a != [f.fault for f in draws(hbm, 100, seed=2)]
