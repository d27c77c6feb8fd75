"""core/health.py: the Xid table row by row, escalation across boots, every other signal,
and the assessment's shape (summary, takes_work, JSON round trip)."""

from __future__ import annotations

from typing import Any

import pytest

from corral.core.health import (
    CLOCK_SKEW_MAX_S,
    D_STATE_MAX,
    ECC_CORRECTED_STORM,
    XID_RULES,
    Assessment,
    Health,
    HealthFacts,
    Repair,
    XidSeen,
    assess,
    worst_health,
    worst_repair,
    xid_rule,
)
from corral.wire.health import (
    DiskUse,
    GpuSignals,
    HealthReport,
    NodeSignals,
    SxidEvent,
    XidEvent,
)

BOOT = "boot-now"
INVENTORY = ((0, "GPU-a"), (1, "GPU-b"))


def gpu(index: int, **signals: Any) -> GpuSignals:
    return GpuSignals(index=index, uuid=INVENTORY[index][1], **signals)


def report(*gpus: GpuSignals, node: NodeSignals | None = None, boot: str = BOOT) -> HealthReport:
    return HealthReport(
        sent_at=1000.0,
        boot_id=boot,
        gpus=list(gpus) or [gpu(0), gpu(1)],
        node=node or NodeSignals(),
    )


def seen(code: int, boot: str = BOOT, index: int = 0, at: float = 1.0) -> XidSeen:
    return XidSeen(gpu_uuid=INVENTORY[index][1], code=code, boot_id=boot, at=at)


def judge(
    *history: XidSeen,
    rep: HealthReport | None = None,
    skew: float | None = None,
) -> Assessment:
    return assess(
        HealthFacts(
            report=rep if rep is not None else report(),
            inventory=INVENTORY,
            history=history,
            clock_skew_s=skew,
        )
    )


def only(a: Assessment, signal: str) -> Any:
    found = [f for f in a.findings if f.signal == signal]
    assert len(found) == 1, a.findings
    return found[0]


# -- order helpers ------------------------------------------------------------------------


def test_worst_health_ranks_unknown_between_healthy_and_degraded() -> None:
    assert worst_health([Health.HEALTHY, Health.UNKNOWN]) == Health.UNKNOWN
    assert worst_health([Health.UNKNOWN, Health.DEGRADED]) == Health.DEGRADED
    assert worst_health([Health.DEGRADED, Health.UNHEALTHY]) == Health.UNHEALTHY
    assert worst_health([]) == Health.HEALTHY


def test_worst_repair_is_the_most_drastic() -> None:
    assert worst_repair([Repair.RESTART_WORKLOAD, Repair.NONE]) == Repair.RESTART_WORKLOAD
    assert worst_repair([Repair.REBOOT_NODE, Repair.RESET_GPU]) == Repair.REBOOT_NODE
    assert worst_repair([Repair.INSPECT_HARDWARE, Repair.REBOOT_NODE]) == Repair.INSPECT_HARDWARE
    assert worst_repair([]) == Repair.NONE


# -- the table, code by code --------------------------------------------------------------

APPLICATION = [13, 31, 43, 137, 170]
REBOOT = [9, 12, 16, 18, 19, 26, 27, 28, 29, 30, 33, 34, 35, 36, 42, 46, 47, 59, 60, 61]
REBOOT += [78, 94, *range(144, 151), 151, 155, 156, 158, 163, 166, 167, 169, 172, 173]
REBOOT_THEN_INSPECT = [32, 38, 44, 48, 62, 63, 64, 65, 68, 69, 74, 79, 95, 110]
REBOOT_THEN_INSPECT += [119, 120, 121, 123, 140]
INSPECT = [81, 143]
RECORD = [45, 92]
TABLE = (
    [(c, "application", Health.HEALTHY, Repair.RESTART_WORKLOAD) for c in APPLICATION]
    + [(c, "reboot", Health.UNHEALTHY, Repair.REBOOT_NODE) for c in REBOOT]
    + [
        (c, "reboot-then-inspect", Health.UNHEALTHY, Repair.REBOOT_NODE)
        for c in REBOOT_THEN_INSPECT
    ]
    + [(c, "inspect", Health.UNHEALTHY, Repair.INSPECT_HARDWARE) for c in INSPECT]
    + [(c, "record", Health.HEALTHY, Repair.NONE) for c in RECORD]
)


def test_the_table_holds_exactly_the_listed_codes() -> None:
    assert {c for rule in XID_RULES for c in rule.codes} == {c for c, *_ in TABLE}
    assert all(rule.meaning for rule in XID_RULES)


@pytest.mark.parametrize(("code", "kind", "health", "repair"), TABLE)
def test_one_xid_in_this_boot(code: int, kind: str, health: Health, repair: Repair) -> None:
    rule = xid_rule(code)
    assert rule is not None and rule.kind == kind
    a = judge(seen(code))
    g0, g1 = a.gpus
    assert (g0.health, g0.repair) == (health, repair)
    finding = only(a, "xid")
    assert (finding.gpu, finding.code, finding.health, finding.repair) == (0, code, health, repair)
    assert finding.sentence.startswith(f"GPU 0: Xid {code}, {rule.meaning}")
    assert (g1.health, g1.repair) == (Health.HEALTHY, Repair.NONE)


def test_xid_79_sentence_reads_for_people() -> None:
    a = judge(seen(79, index=1))
    assert a.gpus[1].findings[0].sentence == "GPU 1: Xid 79, fell off the bus: reboot the node"
    assert a.summary == "GPU 1: Xid 79, fell off the bus: reboot the node"
    assert not a.takes_work and not a.needs_operator


def test_xid_48_is_a_double_bit_ecc_error() -> None:
    assert only(judge(seen(48)), "xid").sentence == (
        "GPU 0: Xid 48, double-bit ECC error: reboot the node"
    )


def test_unknown_xid_degrades_and_says_it_is_not_in_the_table() -> None:
    assert xid_rule(999) is None
    a = judge(seen(999))
    assert (a.gpus[0].health, a.gpus[0].repair) == (Health.DEGRADED, Repair.NONE)
    assert a.gpus[0].schedulable
    assert only(a, "xid").sentence == "GPU 0: Xid 999, not in corral's table"
    assert a.takes_work


def test_nvlink_xid_names_its_subcode() -> None:
    event = XidSeen("GPU-a", 149, BOOT, 1.0, subcode=37)
    sentence = only(judge(event), "xid").sentence
    assert sentence == "GPU 0: Xid 149, NVLink NETIR error (subcode 37): reboot the node"


def test_xids_in_the_report_count_before_the_server_stores_them() -> None:
    rep = report(gpu(0, xids=[XidEvent(code=13, at=5.0, source="fake")]), gpu(1))
    assert judge(rep=rep).gpus[0].repair == Repair.RESTART_WORKLOAD
    # The same event stored and in the report counts once: two application Xids, not three.
    a = judge(seen(13, at=5.0), seen(13, at=6.0), rep=rep)
    assert (a.gpus[0].health, a.gpus[0].repair) == (Health.HEALTHY, Repair.RESTART_WORKLOAD)
    assert len(a.findings) == 2


def test_xid_of_a_gpu_outside_the_inventory_is_ignored() -> None:
    stray = XidSeen("GPU-zzz", 79, BOOT, 1.0)
    assert judge(stray).health == Health.HEALTHY


# -- application Xids ---------------------------------------------------------------------


def test_two_application_xids_keep_the_gpu_healthy() -> None:
    a = judge(seen(13, at=1.0), seen(31, at=2.0))
    assert (a.gpus[0].health, a.gpus[0].repair) == (Health.HEALTHY, Repair.RESTART_WORKLOAD)
    assert [f.code for f in a.gpus[0].findings] == [13, 31]
    assert a.takes_work and a.health == Health.HEALTHY


def test_three_application_xids_in_one_boot_reset_the_gpu() -> None:
    a = judge(seen(13, at=1.0), seen(13, at=2.0), seen(43, at=3.0))
    g0 = a.gpus[0]
    assert (g0.health, g0.repair) == (Health.UNHEALTHY, Repair.RESET_GPU)
    assert not g0.schedulable
    assert g0.findings[0].sentence == (
        "GPU 0: 3 application Xids in this boot (13, 43): reset the GPU"
    )
    assert a.takes_work  # a GPU reset does not take the node out


def test_application_xids_spread_over_gpus_or_boots_do_not_add_up() -> None:
    a = judge(seen(13, index=0), seen(13, index=1, at=2.0), seen(31, "old", at=0.5))
    assert [g.repair for g in a.gpus] == [Repair.RESTART_WORKLOAD, Repair.RESTART_WORKLOAD]


# -- escalation across boots --------------------------------------------------------------


def test_reboot_then_inspect_inspects_when_back_after_a_reboot() -> None:
    a = judge(seen(79, "old", at=1.0), seen(79, BOOT, at=2.0))
    assert (a.gpus[0].health, a.gpus[0].repair) == (Health.UNHEALTHY, Repair.INSPECT_HARDWARE)
    assert a.needs_operator and not a.takes_work
    assert (
        a.summary == "GPU 0: Xid 79, fell off the bus, again after a reboot: inspect the hardware"
    )


def test_reboot_then_inspect_on_another_gpu_does_not_escalate() -> None:
    a = judge(seen(79, "old", index=1), seen(79, BOOT, index=0))
    assert [g.repair for g in a.gpus] == [Repair.REBOOT_NODE, Repair.NONE]


def test_reboot_row_seen_in_three_boots_inspects() -> None:
    history = (seen(94, "b1", at=1.0), seen(94, "b2", at=2.0), seen(94, BOOT, at=3.0))
    a = judge(*history)
    assert a.gpus[0].repair == Repair.INSPECT_HARDWARE
    assert only(a, "xid").sentence == (
        "GPU 0: Xid 94, contained ECC error, seen in 3 boots: inspect the hardware"
    )
    two_boots = judge(seen(94, "b2", at=2.0), seen(94, BOOT, at=3.0))
    assert two_boots.gpus[0].repair == Repair.REBOOT_NODE


def test_record_rows_do_not_escalate() -> None:
    a = judge(seen(45, "b1"), seen(45, "b2"), seen(45, BOOT))
    assert (a.gpus[0].health, a.gpus[0].repair) == (Health.HEALTHY, Repair.NONE)


def test_inspect_verdict_persists_across_a_reboot() -> None:
    a = judge(seen(143, "old"))  # the report is from a later boot, and shows nothing
    assert a.gpus[0].repair == Repair.INSPECT_HARDWARE
    assert a.needs_operator and not a.takes_work
    earlier_escalation = judge(seen(48, "b1", at=1.0), seen(48, "b2", at=2.0))
    assert earlier_escalation.gpus[0].repair == Repair.INSPECT_HARDWARE


def test_reboot_verdict_cleared_by_a_new_boot() -> None:
    before = judge(seen(79, "old"), rep=report(boot="old"))
    assert before.gpus[0].repair == Repair.REBOOT_NODE
    after = judge(seen(79, "old"), rep=report(boot=BOOT))
    assert (after.gpus[0].health, after.gpus[0].repair) == (Health.HEALTHY, Repair.NONE)
    assert after.takes_work and after.summary == "healthy"


# -- other GPU signals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signals", "signal", "health", "repair", "sentence"),
    [
        (
            {"remapped_rows_pending": True},
            "remapped_rows_pending",
            Health.UNHEALTHY,
            Repair.REBOOT_NODE,
            "GPU 1: row remap pending: reboot the node",
        ),
        (
            {"remapped_rows_failed": True},
            "remapped_rows_failed",
            Health.UNHEALTHY,
            Repair.INSPECT_HARDWARE,
            "GPU 1: row remap failed: inspect the hardware",
        ),
        (
            {"ecc_volatile_uncorrected": 2},
            "ecc_uncorrected",
            Health.UNHEALTHY,
            Repair.REBOOT_NODE,
            "GPU 1: 2 uncorrected ECC errors this boot: reboot the node",
        ),
        (
            {"ecc_volatile_corrected": ECC_CORRECTED_STORM + 1},
            "ecc_corrected",
            Health.DEGRADED,
            Repair.NONE,
            f"GPU 1: {ECC_CORRECTED_STORM + 1} corrected ECC errors this boot",
        ),
        (
            {"throttle": ["sw_power_cap", "hw_thermal", "hw_slowdown"]},
            "thermal",
            Health.DEGRADED,
            Repair.NONE,
            "GPU 1: throttled (hw_slowdown, hw_thermal)",
        ),
        (
            {"nvlink_down": [3, 1]},
            "nvlink",
            Health.UNHEALTHY,
            Repair.REBOOT_NODE,
            "GPU 1: NVLink down (links 1, 3): reboot the node",
        ),
        (
            {"present": False},
            "vanished",
            Health.UNHEALTHY,
            Repair.REBOOT_NODE,
            "GPU 1: not seen, fell off the bus: reboot the node",
        ),
    ],
)
def test_gpu_signal(
    signals: dict[str, Any], signal: str, health: Health, repair: Repair, sentence: str
) -> None:
    a = judge(rep=report(gpu(0), gpu(1, **signals)))
    g1 = a.gpus[1]
    assert (g1.health, g1.repair) == (health, repair)
    assert g1.schedulable == (health == Health.DEGRADED)
    finding = only(a, signal)
    assert (finding.gpu, finding.sentence) == (1, sentence)
    assert a.gpus[0].health == Health.HEALTHY
    assert a.takes_work == (repair not in (Repair.REBOOT_NODE, Repair.INSPECT_HARDWARE))


def test_signals_below_their_bounds_are_healthy() -> None:
    calm = gpu(
        1,
        ecc_volatile_corrected=ECC_CORRECTED_STORM,
        ecc_volatile_uncorrected=0,
        throttle=["sw_power_cap", "gpu_idle"],
        nvlink_down=[],
        remapped_rows_pending=False,
        remapped_rows_failed=False,
    )
    a = judge(rep=report(gpu(0), calm))
    assert (a.health, a.findings, a.summary) == (Health.HEALTHY, (), "healthy")


def test_inventory_gpu_missing_from_the_report_fell_off_the_bus() -> None:
    a = judge(rep=report(gpu(0)))
    assert (a.gpus[1].health, a.gpus[1].repair) == (Health.UNHEALTHY, Repair.REBOOT_NODE)
    assert only(a, "vanished").gpu == 1


def test_gpu_with_every_signal_unreadable_is_unknown() -> None:
    blind = gpu(1, unknown=["ecc", "remap", "throttle", "nvlink"])
    a = judge(rep=report(gpu(0), blind))
    assert (a.gpus[1].health, a.gpus[1].repair) == (Health.UNKNOWN, Repair.NONE)
    assert not a.gpus[1].schedulable
    assert a.health == Health.UNKNOWN and a.takes_work
    assert only(a, "unknown").sentence == (
        "GPU 1: its signals could not be read (ecc, remap, throttle, nvlink)"
    )
    partly = gpu(1, ecc_volatile_uncorrected=0, unknown=["remap"])
    assert judge(rep=report(gpu(0), partly)).gpus[1].health == Health.HEALTHY


# -- node signals -------------------------------------------------------------------------


def node_judge(skew: float | None = None, **node: Any) -> Assessment:
    return judge(rep=report(gpu(0), gpu(1), node=NodeSignals(**node)), skew=skew)


def test_fewer_gpus_seen_than_registered_reboots_the_node() -> None:
    a = node_judge(gpus_seen=1)
    f = only(a, "gpu_count")
    assert (f.gpu, f.health, f.repair) == (None, Health.UNHEALTHY, Repair.REBOOT_NODE)
    assert f.sentence == "node: 1 of 2 GPUs seen: reboot the node"
    assert not a.takes_work
    assert node_judge(gpus_seen=2).findings == ()


@pytest.mark.parametrize("role", ["workload", "checkpoint"])
def test_full_work_disk_keeps_the_node_out(role: str) -> None:
    path = "/var/lib/corral/ckpt"
    a = node_judge(disks=[DiskUse(path=path, role=role, free_mb=200, total_mb=100 * 1024)])
    f = only(a, "disk")
    assert (f.health, f.repair) == (Health.UNHEALTHY, Repair.NONE)
    assert f.sentence == f"disk {path} ({role}): 200 MiB free of 100 GiB"
    assert a.health == Health.UNHEALTHY and a.repair == Repair.NONE
    assert not a.takes_work and not a.needs_operator
    assert all(g.health == Health.HEALTHY for g in a.gpus)


def test_disk_bounds_absolute_and_relative() -> None:
    big = 10 * 1024 * 1024  # 10 TiB: 2% is 200 GiB
    below_share = DiskUse(path="/d", role="workload", free_mb=100 * 1024, total_mb=big)
    assert only(node_judge(disks=[below_share]), "disk").health == Health.UNHEALTHY
    roomy = DiskUse(path="/d", role="workload", free_mb=300 * 1024, total_mb=big)
    small = DiskUse(path="/s", role="workload", free_mb=1024, total_mb=2048)
    assert node_judge(disks=[roomy, small]).findings == ()


def test_low_state_disk_only_degrades() -> None:
    a = node_judge(disks=[DiskUse(path="/var/lib/corral", role="state", free_mb=10, total_mb=5000)])
    assert only(a, "disk").health == Health.DEGRADED
    assert a.health == Health.DEGRADED and a.takes_work


def test_low_memory_degrades() -> None:
    f = only(node_judge(memory_available_pct=3.0), "memory")
    assert (f.health, f.sentence) == (Health.DEGRADED, "node: 3.0% of memory available")
    assert node_judge(memory_available_pct=6.0).findings == ()


def test_processes_stuck_in_d_state_degrade() -> None:
    a = node_judge(d_state=D_STATE_MAX, d_state_names=["python", "rsync"])
    f = only(a, "d_state")
    assert f.health == Health.DEGRADED and a.takes_work
    assert f.sentence == f"node: {D_STATE_MAX} processes stuck in D state (python, rsync)"
    assert node_judge(d_state=D_STATE_MAX - 1).findings == ()


@pytest.mark.parametrize(("skew", "word"), [(45.0, "ahead of"), (-45.0, "behind")])
def test_clock_skew_degrades(skew: float, word: str) -> None:
    f = only(node_judge(skew=skew), "clock_skew")
    assert (f.health, f.sentence) == (Health.DEGRADED, f"node: clock {word} the server by 45 s")
    assert node_judge(skew=CLOCK_SKEW_MAX_S).findings == ()


def test_sxids_degrade_and_are_recorded_per_code() -> None:
    events = [SxidEvent(code=12028, at=1.0), SxidEvent(code=12028, at=2.0)]
    a = node_judge(sxids=events)
    f = only(a, "sxid")
    assert (f.code, f.health, f.repair) == (12028, Health.DEGRADED, Repair.NONE)
    assert f.sentence == "node: NVSwitch error SXid 12028"
    assert a.takes_work


# -- no report yet ------------------------------------------------------------------------


def test_no_report_is_unknown_and_not_punished() -> None:
    a = assess(HealthFacts(report=None, inventory=INVENTORY))
    assert [g.health for g in a.gpus] == [Health.UNKNOWN, Health.UNKNOWN]
    assert a.health == Health.UNKNOWN and a.repair == Repair.NONE
    assert a.takes_work and not a.needs_operator
    assert a.summary == "node: no health report yet"


def test_no_report_still_keeps_an_inspect_verdict() -> None:
    a = assess(HealthFacts(report=None, inventory=INVENTORY, history=(seen(81, "old"),)))
    assert a.gpus[0].repair == Repair.INSPECT_HARDWARE
    assert a.gpus[1].health == Health.UNKNOWN
    assert a.needs_operator and not a.takes_work
    rebooted = assess(HealthFacts(report=None, inventory=INVENTORY, history=(seen(79, "old"),)))
    assert rebooted.takes_work and rebooted.gpus[0].repair == Repair.NONE


# -- the assessment -----------------------------------------------------------------------


def busy() -> Assessment:
    rep = report(
        gpu(0, throttle=["hw_thermal"]),
        gpu(1, remapped_rows_failed=True),
        node=NodeSignals(memory_available_pct=1.0),
    )
    return judge(seen(13), seen(45, index=1), rep=rep)


def test_findings_most_severe_first_and_summary_counts_the_rest() -> None:
    a = busy()
    assert [(f.gpu, f.signal) for f in a.findings] == [
        (1, "remapped_rows_failed"),
        (0, "thermal"),
        (None, "memory"),
        (0, "xid"),  # healthy, restart-workload
        (1, "xid"),  # healthy, none: recorded
    ]
    # The recorded Xid 45 asks nothing of anyone: it is not one of the "more".
    assert a.summary == "GPU 1: row remap failed: inspect the hardware (and 3 more)"
    assert (a.health, a.repair) == (Health.UNHEALTHY, Repair.INSPECT_HARDWARE)
    assert [g.health for g in a.gpus] == [Health.DEGRADED, Health.UNHEALTHY]


def test_json_round_trip() -> None:
    a = busy()
    data = a.to_json()
    assert data["gpus"][1] == {
        "index": 1,
        "uuid": "GPU-b",
        "health": "unhealthy",
        "repair": "inspect-hardware",
        "sentences": [
            "GPU 1: row remap failed: inspect the hardware",
            "GPU 1: Xid 45, preemptive cleanup after an earlier error",
        ],
    }
    assert (data["takes_work"], data["needs_operator"]) == (False, True)
    assert Assessment.from_json(data) == a
    empty = assess(HealthFacts(report=None, inventory=()))
    assert Assessment.from_json(empty.to_json()) == empty
