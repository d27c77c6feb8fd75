"""GPU faults in the simulator, judged by the control plane's own health rules.

A failure of a GPU-type cause of a profile (Llama 3's "faulty GPU", "GPU HBM3 memory", ...)
is drawn as a concrete signal the agent would report (an Xid, a throttle reason, a failed
row remap), and what happens to the node comes from `corral.core.health.assess`, the
function the server runs on a health report — not from a table kept here:

```
 cause ─► GPU_FAULTS row ─► seeded draw of one FaultSignal ─► HealthFacts for the node
                                                                   ▼ core.health.assess
          Consequence: health, repair, takes_work ─► out of the pool? for how long?
```

How long a node is out follows the repair: `REPAIR_S` for the ones done in place (reset a
GPU, reboot), and the cause's own hardware repair time for `inspect-hardware`. A node whose
verdict still takes work (a throttled GPU: degraded) stays in the pool.

What the simulator does not model: a `reboot-then-inspect` Xid (79, 48, 95, 119, 120) is
judged on its first boot, so the verdict is `reboot-node`; the real rule escalates to
`inspect-hardware` when the same Xid comes back after the reboot, and the simulator does not
make a rebooted GPU fail again (its next failure is a fresh draw at the profile's rate).
The paper gives no split of a cause between codes: where a row lists several, the weights
below are assumptions.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from corral.core.health import Health, HealthFacts, Repair, assess
from corral.wire.health import GpuSignals, HealthReport, NodeSignals, XidEvent


@dataclass(frozen=True)
class FaultSignal:
    """What the agent would report for the faulty GPU. No field set: nothing shows."""

    label: str  # for people: "Xid 79", "throttle hw_thermal"
    xids: tuple[int, ...] = ()
    throttle: tuple[str, ...] = ()
    remapped_rows_failed: bool = False


@dataclass(frozen=True)
class GpuFaultRow:
    """One cause of the profile and the signals it shows as, with their shares."""

    cause: str  # the profile's cause name
    signals: tuple[tuple[FaultSignal, float], ...]  # (signal, weight)
    why: str

    def draw(self, rng: random.Random) -> FaultSignal:
        if len(self.signals) == 1:
            return self.signals[0][0]  # no draw: the stream is not consumed for nothing
        options = [signal for signal, _ in self.signals]
        weights = [weight for _, weight in self.signals]
        return rng.choices(options, weights)[0]


def _xid(*codes: int) -> FaultSignal:
    return FaultSignal(" + ".join(f"Xid {c}" for c in codes), xids=codes)


NOTHING = FaultSignal("nothing shows")

# One row per GPU-type cause of the Llama 3 405B profile (failures.LLAMA3_405B).
GPU_FAULTS: tuple[GpuFaultRow, ...] = (
    GpuFaultRow(
        "faulty GPU",
        ((_xid(79), 1.0),),
        "Xid 79, fell off the bus: the typical dead H100, the driver loses the device",
    ),
    GpuFaultRow(
        "GPU HBM3 memory",
        (
            (_xid(94), 0.35),
            (_xid(95), 0.35),
            (_xid(48), 0.1),
            (
                FaultSignal("Xid 64 + row remap failed", xids=(64,), remapped_rows_failed=True),
                0.2,
            ),
        ),
        "uncorrectable HBM errors: on H100 the driver contains them (94) or not (95), "
        "older paths still say double-bit ECC (48); when no spare row is left the remap "
        "fails (Xid 64 with NVML's remapped_rows_failed): the board needs replacing",
    ),
    GpuFaultRow(
        "GPU SRAM memory",
        ((_xid(94), 0.5), (_xid(95), 0.5)),
        "uncorrectable SRAM ECC errors (caches, register files) come as contained or "
        "uncontained ECC Xids on H100",
    ),
    GpuFaultRow(
        "GPU system processor",
        ((_xid(119), 0.5), (_xid(120), 0.5)),
        "the GSP firmware stops answering (119, RPC timeout) or reports an error (120)",
    ),
    GpuFaultRow(
        "silent data corruption",
        ((NOTHING, 1.0),),
        "no Xid and no counter shows it, so core.health sees a healthy node; the job's own "
        "checks (a loss spike, NaNs, a checksum mismatch) raise: the simulator treats it as "
        "an error in the training script (the attempt ends, the node stays in the pool)",
    ),
    GpuFaultRow(
        "GPU thermal interface/sensor",
        ((FaultSignal("throttle hw_thermal", throttle=("hw_thermal",)), 1.0),),
        "a bad thermal interface makes the GPU throttle (hw_thermal): degraded, it still "
        "takes work; the simulator counts it and the attempt carries on",
    ),
)

GPU_FAULT_BY_CAUSE: dict[str, GpuFaultRow] = {row.cause: row for row in GPU_FAULTS}

# How long a node is out for a repair done in place. Restarting the workload needs nothing
# of the node (the job's own restart time covers it); a GPU reset (nvidia-smi -r, after the
# GPU's processes stop) takes a few minutes; a reboot of an 8-GPU host with its driver,
# fabric manager and agent back up, about ten. inspect-hardware is the cause's own hardware
# repair time (failures.Cause.repair_s), so it is not here.
REPAIR_S: dict[Repair, float] = {
    Repair.NONE: 0.0,
    Repair.RESTART_WORKLOAD: 0.0,
    Repair.RESET_GPU: 5 * 60.0,
    Repair.REBOOT_NODE: 10 * 60.0,
}


@dataclass(frozen=True)
class Consequence:
    """core.health's verdict on a node with one fault on GPU 0."""

    signal: FaultSignal
    health: Health
    repair: Repair
    takes_work: bool  # the node's verdict: False, corral cordons it
    gpu_schedulable: bool  # the faulty GPU's own verdict
    summary: str

    @property
    def leaves_pool(self) -> bool:
        """Out of the pool until repaired: cordoned, or a GPU short (a gang member of a
        whole node cannot run on seven of eight)."""
        return not self.takes_work or not self.gpu_schedulable


FAULTY_GPU = 0
BOOT_ID = "sim-boot"


def health_facts(signal: FaultSignal, gpus: int) -> HealthFacts:
    """The facts the server would hold for a node of `gpus` GPUs whose GPU 0 shows `signal`
    (one report, this boot, no earlier Xids)."""
    reports = []
    for index in range(gpus):
        fault = index == FAULTY_GPU
        reports.append(
            GpuSignals(
                index=index,
                uuid=f"GPU-sim-{index}",
                throttle=list(signal.throttle) if fault else [],
                remapped_rows_failed=signal.remapped_rows_failed if fault else False,
                xids=[XidEvent(code=c, at=0.0, source="fake") for c in signal.xids]
                if fault
                else [],
            )
        )
    report = HealthReport(
        sent_at=0.0, boot_id=BOOT_ID, backend="fake", gpus=reports, node=NodeSignals(gpus_seen=gpus)
    )
    inventory = tuple((i, f"GPU-sim-{i}") for i in range(gpus))
    return HealthFacts(report=report, inventory=inventory)


@functools.cache
def consequence(signal: FaultSignal, gpus: int = 8) -> Consequence:
    """core.health's verdict for `signal` (cached: the same signal, the same verdict)."""
    verdict = assess(health_facts(signal, gpus))
    return Consequence(
        signal=signal,
        health=verdict.health,
        repair=verdict.repair,
        takes_work=verdict.takes_work,
        gpu_schedulable=verdict.gpus[FAULTY_GPU].schedulable,
        summary=verdict.summary,
    )


def out_s(c: Consequence, hardware_repair_s: float) -> float:
    """How long the node is out of the pool (0: it stays)."""
    if not c.leaves_pool:
        return 0.0
    if c.repair is Repair.INSPECT_HARDWARE:
        return hardware_repair_s
    return REPAIR_S[c.repair]
