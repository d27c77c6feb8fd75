"""Health rules: a node's latest report, its registered GPUs and the Xids stored for it in,
a verdict per GPU and for the node out. Pure: no I/O, no clock reads.

```
 HealthFacts ─► Xids (history + this report) ─► per GPU, per code: XID_RULES row
     │                                            ├─ application: restart-workload (3+: reset-gpu)
     │                                            ├─ reboot: reboot-node (this boot only)
     │                                            ├─ reboot-then-inspect: reboot-node, inspect
     │                                            │    the hardware once seen in a second boot
     │                                            ├─ inspect: inspect-hardware at once
     │                                            └─ record: noted, nothing to do
     ├──────► GPU signals (ECC, row remapping, throttle, NVLink, vanished, unreadable)
     └──────► node signals (GPU count, disks, memory, D state, clock skew, SXids)
                    ▼
   Finding* ─► GpuHealth per inventory GPU ─► Assessment (worst health, worst repair,
                                              takes_work, needs_operator, summary)
```

What a verdict lasts for: a reboot clears `reboot-node` verdicts, so only Xids of the boot
the report comes from count for them. A verdict of `inspect-hardware` from any boot lasts
until an operator marks the node repaired (the server then drops the history before the
mark). The same Xid on the same GPU in `ESCALATE_BOOTS` distinct boots means a reboot does
not fix it: inspect the hardware, whatever its row.

The Xid table is core/xid_table.py (NVIDIA's Xid catalog, GPUd's mapping to repairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from corral.core.xid_table import XID_RULES as XID_RULES
from corral.core.xid_table import XidKind as XidKind
from corral.core.xid_table import XidRule as XidRule
from corral.core.xid_table import xid_rule as xid_rule
from corral.wire.health import GpuSignals, HealthReport, NodeSignals


class Health(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # still takes work, slower or at risk
    UNHEALTHY = "unhealthy"  # takes no work
    UNKNOWN = "unknown"  # not read: never taken as healthy, never punished either


class Repair(StrEnum):
    NONE = "none"
    RESTART_WORKLOAD = "restart-workload"
    RESET_GPU = "reset-gpu"
    REBOOT_NODE = "reboot-node"
    INSPECT_HARDWARE = "inspect-hardware"


# "Worst" order. Unknown sits between healthy and degraded: a GPU we could not read is worse
# than one we read as fine, but nothing says it is slow or broken.
_HEALTH_RANK: dict[Health, int] = {
    Health.HEALTHY: 0,
    Health.UNKNOWN: 1,
    Health.DEGRADED: 2,
    Health.UNHEALTHY: 3,
}
_REPAIR_RANK: dict[Repair, int] = {r: i for i, r in enumerate(Repair)}

# What a person is told to do, at the end of a sentence (none: nothing is said).
_REPAIR_WORDS: dict[Repair, str] = {
    Repair.NONE: "",
    Repair.RESTART_WORKLOAD: "restart the workload",
    Repair.RESET_GPU: "reset the GPU",
    Repair.REBOOT_NODE: "reboot the node",
    Repair.INSPECT_HARDWARE: "inspect the hardware",
}


def worst_health(values: Iterable[Health]) -> Health:
    """The worst of `values` (healthy when there are none)."""
    return max(values, key=_HEALTH_RANK.__getitem__, default=Health.HEALTHY)


def worst_repair(values: Iterable[Repair]) -> Repair:
    """The most drastic of `values` (none when there are none)."""
    return max(values, key=_REPAIR_RANK.__getitem__, default=Repair.NONE)


# -- bounds -----------------------------------------------------------------------------------

# Application Xids on one GPU in one boot before the GPU itself is suspect: one or two are a
# program's bug (an illegal address, a page fault); a third, whoever ran, points at the GPU.
APP_XID_REPEAT = 3
# Distinct boots with the same Xid on the same GPU after which rebooting is no repair: it
# came back after two reboots.
ESCALATE_BOOTS = 3
# Corrected ECC errors since the driver loaded. A sound HBM stack corrects a handful per boot;
# thousands mean a weak cell hammered until it fails uncorrected (the driver's own warning
# for this, Xid 92, comes later). Corrected errors cost no data: degraded, not unhealthy.
ECC_CORRECTED_STORM = 1000
# Throttle reasons that mean the GPU runs slow because of heat or power, not by request
# (idle, application clocks and the software power cap are normal operation).
HURTFUL_THROTTLE = frozenset({"hw_slowdown", "hw_thermal", "sw_thermal", "hw_power_brake"})
# A disk is "full" below either bound: 1 GiB because a checkpoint shard, a wheel cache or a
# log burst does not fit in less on any size of disk; 2% because filesystems slow down and
# reserve blocks near full (ext4 keeps 5% for root), so a big disk is in trouble before 1 GiB.
DISK_MIN_FREE_MB = 1024
DISK_MIN_FREE_FRACTION = 0.02
# Available memory below this share of the total: the OOM killer is near, and page cache
# (which feeds data loaders) is already gone.
MEMORY_MIN_AVAILABLE_PCT = 5.0
# Processes in uninterruptible sleep at one sample. A few come and go under heavy I/O; this
# many at once means I/O that does not return (a hung network mount, a stuck driver call).
D_STATE_MAX = 10
# Clock difference between node and server. Beyond this, timestamps in logs and Xid history
# mislead, and TLS and token expiry checks start failing.
CLOCK_SKEW_MAX_S = 30.0


# -- the Xid table (core/xid_table.py): what each kind of row asks for -----------------------

# What a row's kind asks for the first time it is seen in a boot.
_KIND_VERDICT: dict[str, tuple[Health, Repair]] = {
    "application": (Health.HEALTHY, Repair.RESTART_WORKLOAD),
    "reboot": (Health.UNHEALTHY, Repair.REBOOT_NODE),
    "reboot-then-inspect": (Health.UNHEALTHY, Repair.REBOOT_NODE),
    "inspect": (Health.UNHEALTHY, Repair.INSPECT_HARDWARE),
    "record": (Health.HEALTHY, Repair.NONE),
}


# -- facts in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class XidSeen:
    """One stored Xid (history), as the server keeps it."""

    gpu_uuid: str
    code: int
    boot_id: str
    at: float
    subcode: int | None = None


@dataclass(frozen=True)
class HealthFacts:
    report: HealthReport | None  # the node's latest report (None: none yet)
    inventory: tuple[tuple[int, str], ...]  # (index, uuid) of the GPUs the node registered
    # Xids stored for this node since an operator last marked it repaired (all boots).
    history: tuple[XidSeen, ...] = ()
    clock_skew_s: float | None = None  # report.sent_at minus the server's clock at arrival


# -- verdict out ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    gpu: int | None  # GPU index; None: the node
    signal: str  # "xid", "ecc_uncorrected", "disk", ...
    health: Health
    repair: Repair
    sentence: str  # what a person reads
    code: int | None = None  # the Xid / SXid code for signal xid / sxid

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "signal": self.signal,
            "health": self.health.value,
            "repair": self.repair.value,
            "sentence": self.sentence,
            "code": self.code,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            gpu=data["gpu"],
            signal=data["signal"],
            health=Health(data["health"]),
            repair=Repair(data["repair"]),
            sentence=data["sentence"],
            code=data.get("code"),
        )


@dataclass(frozen=True)
class GpuHealth:
    index: int
    uuid: str
    health: Health
    repair: Repair
    findings: tuple[Finding, ...]  # most severe first

    @property
    def schedulable(self) -> bool:
        return self.health in (Health.HEALTHY, Health.DEGRADED)


@dataclass(frozen=True)
class Assessment:
    health: Health  # worst of the GPUs and the node's findings
    repair: Repair  # most drastic repair
    gpus: tuple[GpuHealth, ...]  # one per inventory GPU, in index order
    findings: tuple[Finding, ...]  # GPUs' and the node's, most severe first
    takes_work: bool  # False: keep the node out of service (corral cordons it)
    needs_operator: bool  # inspect-hardware: out until an operator marks it repaired
    summary: str  # one line

    def to_json(self) -> dict[str, Any]:
        return {
            "health": self.health.value,
            "repair": self.repair.value,
            "takes_work": self.takes_work,
            "needs_operator": self.needs_operator,
            "summary": self.summary,
            "gpus": [
                {
                    "index": g.index,
                    "uuid": g.uuid,
                    "health": g.health.value,
                    "repair": g.repair.value,
                    "sentences": [f.sentence for f in g.findings],
                }
                for g in self.gpus
            ],
            "findings": [f.to_json() for f in self.findings],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Assessment:
        """The inverse of `to_json`. A GPU's findings are the stored findings of its index
        (in their stored order, which is the GPU's own most-severe-first order)."""
        findings = tuple(Finding.from_json(f) for f in data["findings"])
        gpus = tuple(
            GpuHealth(
                index=g["index"],
                uuid=g["uuid"],
                health=Health(g["health"]),
                repair=Repair(g["repair"]),
                findings=tuple(f for f in findings if f.gpu == g["index"]),
            )
            for g in data["gpus"]
        )
        return cls(
            health=Health(data["health"]),
            repair=Repair(data["repair"]),
            gpus=gpus,
            findings=findings,
            takes_work=bool(data["takes_work"]),
            needs_operator=bool(data["needs_operator"]),
            summary=data["summary"],
        )


# -- the rules --------------------------------------------------------------------------------


def _sentence(subject: str, what: str, repair: Repair) -> str:
    action = _REPAIR_WORDS[repair]
    return f"{subject}: {what}: {action}" if action else f"{subject}: {what}"


def _gpu_finding(
    index: int, signal: str, health: Health, repair: Repair, what: str, code: int | None = None
) -> Finding:
    return Finding(index, signal, health, repair, _sentence(f"GPU {index}", what, repair), code)


def _node_finding(signal: str, health: Health, repair: Repair, what: str) -> Finding:
    return Finding(None, signal, health, repair, _sentence("node", what, repair))


def _severity(finding: Finding) -> tuple[int, int]:
    return (_HEALTH_RANK[finding.health], _REPAIR_RANK[finding.repair])


def _most_severe_first(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=_severity, reverse=True))  # stable: ties keep order


def _notable(finding: Finding) -> bool:
    return finding.health != Health.HEALTHY or finding.repair != Repair.NONE


def _xid_events(facts: HealthFacts) -> tuple[XidSeen, ...]:
    """History plus the report's own Xids (the server may judge a report before storing its
    Xids), each event once."""
    events = list(facts.history)
    if facts.report is not None:
        for gpu in facts.report.gpus:
            for xid in gpu.xids:
                events.append(
                    XidSeen(gpu.uuid, xid.code, facts.report.boot_id, xid.at, xid.subcode)
                )
    return tuple(dict.fromkeys(events))


def _xid_findings(index: int, events: Sequence[XidSeen], boot_id: str | None) -> list[Finding]:
    """One GPU's Xid findings. `boot_id` None: no report, so no current boot; only verdicts
    that outlast a reboot (inspect-hardware) count."""
    by_code: dict[int, list[XidSeen]] = {}
    for event in events:
        by_code.setdefault(event.code, []).append(event)
    findings: list[Finding] = []
    application: list[XidSeen] = []
    for code, seen in sorted(by_code.items()):
        rule = xid_rule(code)
        boots = {e.boot_id for e in seen}
        now = [e for e in seen if e.boot_id == boot_id]
        latest = max(now or seen, key=lambda e: e.at)
        meaning = rule.meaning_for(latest.subcode) if rule else None
        head = f"Xid {code}, {meaning}" if meaning else f"Xid {code}"
        inspect = Repair.INSPECT_HARDWARE
        if len(boots) >= ESCALATE_BOOTS and (rule is None or rule.kind != "record"):
            what = f"{head}, seen in {len(boots)} boots"
            findings.append(_gpu_finding(index, "xid", Health.UNHEALTHY, inspect, what, code))
        elif rule is not None and rule.kind == "inspect":
            findings.append(_gpu_finding(index, "xid", Health.UNHEALTHY, inspect, head, code))
        elif rule is not None and rule.kind == "reboot-then-inspect" and len(boots) >= 2:
            what = f"{head}, again after a reboot"
            findings.append(_gpu_finding(index, "xid", Health.UNHEALTHY, inspect, what, code))
        elif not now:
            continue  # only in earlier boots: the reboot cleared it
        elif rule is None:
            what = f"Xid {code}, not in corral's table"
            findings.append(_gpu_finding(index, "xid", Health.DEGRADED, Repair.NONE, what, code))
        elif rule.kind == "application":
            application.extend(now)
        else:
            health, repair = _KIND_VERDICT[rule.kind]
            findings.append(_gpu_finding(index, "xid", health, repair, head, code))
    if len(application) >= APP_XID_REPEAT:
        codes = sorted({e.code for e in application})
        what = (
            f"{len(application)} application Xids in this boot ({', '.join(str(c) for c in codes)})"
        )
        findings.append(
            _gpu_finding(index, "xid", Health.UNHEALTHY, Repair.RESET_GPU, what, codes[0])
        )
    else:
        for event in application:
            rule = xid_rule(event.code)
            assert rule is not None
            what = f"Xid {event.code}, {rule.meaning_for(event.subcode)}"
            findings.append(
                _gpu_finding(
                    index, "xid", Health.HEALTHY, Repair.RESTART_WORKLOAD, what, event.code
                )
            )
    return findings


# Signals whose every value missing (and named in `unknown`) makes a GPU "unknown".
_JUDGED = (
    "throttle",
    "ecc_volatile_corrected",
    "ecc_volatile_uncorrected",
    "remapped_rows_pending",
    "remapped_rows_failed",
    "nvlink_down",
)


def _signal_findings(index: int, gpu: GpuSignals | None) -> list[Finding]:
    """One GPU's findings from its signals in the report (None: the report lacks it)."""
    reboot, inspect = Repair.REBOOT_NODE, Repair.INSPECT_HARDWARE
    bad = Health.UNHEALTHY
    if gpu is None or not gpu.present:
        return [_gpu_finding(index, "vanished", bad, reboot, "not seen, fell off the bus")]
    if gpu.unknown and all(getattr(gpu, name) is None for name in _JUDGED):
        what = f"its signals could not be read ({', '.join(gpu.unknown)})"
        return [_gpu_finding(index, "unknown", Health.UNKNOWN, Repair.NONE, what)]
    out: list[Finding] = []
    if gpu.remapped_rows_failed:
        out.append(_gpu_finding(index, "remapped_rows_failed", bad, inspect, "row remap failed"))
    if gpu.remapped_rows_pending:
        what = "row remap pending"
        out.append(_gpu_finding(index, "remapped_rows_pending", bad, reboot, what))
    if gpu.ecc_volatile_uncorrected:
        what = f"{gpu.ecc_volatile_uncorrected} uncorrected ECC errors this boot"
        out.append(_gpu_finding(index, "ecc_uncorrected", bad, reboot, what))
    if gpu.ecc_volatile_corrected is not None and gpu.ecc_volatile_corrected > ECC_CORRECTED_STORM:
        what = f"{gpu.ecc_volatile_corrected} corrected ECC errors this boot"
        out.append(_gpu_finding(index, "ecc_corrected", Health.DEGRADED, Repair.NONE, what))
    hurt = sorted(HURTFUL_THROTTLE.intersection(gpu.throttle or ()))
    if hurt:
        what = f"throttled ({', '.join(hurt)})"
        out.append(_gpu_finding(index, "thermal", Health.DEGRADED, Repair.NONE, what))
    if gpu.nvlink_down:
        links = ", ".join(str(link) for link in sorted(gpu.nvlink_down))
        out.append(_gpu_finding(index, "nvlink", bad, reboot, f"NVLink down (links {links})"))
    return out


def _size(mb: int) -> str:
    return f"{mb / 1024:.0f} GiB" if mb >= 10 * 1024 else f"{mb} MiB"


def _node_findings(node: NodeSignals, inventory_count: int, skew: float | None) -> list[Finding]:
    out: list[Finding] = []
    if node.gpus_seen is not None and node.gpus_seen < inventory_count:
        what = f"{node.gpus_seen} of {inventory_count} GPUs seen"
        out.append(_node_finding("gpu_count", Health.UNHEALTHY, Repair.REBOOT_NODE, what))
    for disk in node.disks or ():
        if disk.total_mb <= 0:
            continue  # an unreadable size says nothing
        full = (
            disk.free_mb < DISK_MIN_FREE_MB or disk.free_mb < disk.total_mb * DISK_MIN_FREE_FRACTION
        )
        if not full:
            continue
        # A full workload or checkpoint disk fails every job placed here; a full state disk
        # hurts corral's own bookkeeping first.
        health = Health.DEGRADED if disk.role == "state" else Health.UNHEALTHY
        what = f"{_size(disk.free_mb)} free of {_size(disk.total_mb)}"
        sentence = f"disk {disk.path} ({disk.role}): {what}"
        out.append(Finding(None, "disk", health, Repair.NONE, sentence))
    pct = node.memory_available_pct
    if pct is not None and pct < MEMORY_MIN_AVAILABLE_PCT:
        what = f"{pct:.1f}% of memory available"
        out.append(_node_finding("memory", Health.DEGRADED, Repair.NONE, what))
    if node.d_state is not None and node.d_state >= D_STATE_MAX:
        names = f" ({', '.join(node.d_state_names)})" if node.d_state_names else ""
        what = f"{node.d_state} processes stuck in D state{names}"
        out.append(_node_finding("d_state", Health.DEGRADED, Repair.NONE, what))
    if skew is not None and abs(skew) > CLOCK_SKEW_MAX_S:
        what = f"clock {'ahead of' if skew > 0 else 'behind'} the server by {abs(skew):.0f} s"
        out.append(_node_finding("clock_skew", Health.DEGRADED, Repair.NONE, what))
    for code in sorted({s.code for s in node.sxids}):
        sentence = _sentence("node", f"NVSwitch error SXid {code}", Repair.NONE)
        out.append(Finding(None, "sxid", Health.DEGRADED, Repair.NONE, sentence, code))
    return out


def assess(facts: HealthFacts) -> Assessment:
    """Judge a node: every inventory GPU, then the node itself."""
    report = facts.report
    events = _xid_events(facts)
    uuid_index = {uuid: index for index, uuid in facts.inventory}
    signals = {g.uuid: g for g in report.gpus} if report else {}
    gpus: list[GpuHealth] = []
    for index, uuid in sorted(facts.inventory):
        mine = [e for e in events if uuid_index.get(e.gpu_uuid) == index]
        found = _xid_findings(index, mine, report.boot_id if report else None)
        if report is not None:
            found += _signal_findings(index, signals.get(uuid))
        # No report: unknown, unless a verdict that outlasts reboots already stands.
        base = Health.HEALTHY if report is not None else Health.UNKNOWN
        ordered = _most_severe_first(found)
        gpus.append(
            GpuHealth(
                index=index,
                uuid=uuid,
                health=worst_health([base, *(f.health for f in ordered)]),
                repair=worst_repair(f.repair for f in ordered),
                findings=ordered,
            )
        )
    if report is None:
        node = [_node_finding("unknown", Health.UNKNOWN, Repair.NONE, "no health report yet")]
    else:
        node = _node_findings(report.node, len(facts.inventory), facts.clock_skew_s)
    findings = _most_severe_first([f for g in gpus for f in g.findings] + node)
    health = worst_health([g.health for g in gpus] + [f.health for f in node])
    repair = worst_repair(f.repair for f in findings)
    node_out = any(f.health == Health.UNHEALTHY for f in node)
    notable = [f for f in findings if _notable(f)]
    if notable:
        more = len(notable) - 1
        summary = notable[0].sentence + (f" (and {more} more)" if more else "")
    else:
        summary = "healthy"
    return Assessment(
        health=health,
        repair=repair,
        gpus=tuple(gpus),
        findings=findings,
        takes_work=not node_out and repair not in (Repair.REBOOT_NODE, Repair.INSPECT_HARDWARE),
        needs_operator=repair == Repair.INSPECT_HARDWARE,
        summary=summary,
    )
