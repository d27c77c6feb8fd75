"""Health signals on the agent channel: what a node's checks saw (agent/health/), judged by
core/health.py on the control plane.

The agent sends a `health` message when a signal that health depends on changes (a new Xid,
an ECC counter, a throttle reason, a link, a disk crossing its bound, a GPU gone), and a
full one every `FULL_REPORT_S` with the telemetry (utilization, temperature, power) too.
Every field an agent could not read is None and named in `unknown`: a failed read is
"unknown", never "healthy". Every list is bounded: one node cannot flood the server.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

FULL_REPORT_S = 15.0
MAX_GPUS = 1024
MAX_EVENTS = 64  # Xid / SXid events per report (the rest are counted in `dropped`)
TEXT_MAX = 500

XidSource = Literal["nvml", "kmsg", "fake"]
Text = Annotated[str, Field(max_length=TEXT_MAX)]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore")


class XidEvent(_Msg):
    """One Xid the driver reported for a GPU."""

    code: int = Field(ge=0, le=100_000)
    at: float = Field(description="when the agent saw it, by the node's clock")
    source: XidSource
    subcode: int | None = Field(
        default=None, description="for NVLink Xids 144-150: the link error's subcode"
    )
    detail: Text = Field(default="", description="the driver's words: pid, name, message")


class SxidEvent(_Msg):
    """One NVSwitch error (SXid) from the kernel log; not tied to one GPU."""

    code: int = Field(ge=0, le=100_000)
    at: float
    detail: Text = ""


class GpuSignals(_Msg):
    index: int = Field(ge=0, lt=MAX_GPUS)
    uuid: Annotated[str, Field(max_length=128)]
    present: bool = Field(default=True, description="false: in the inventory, not seen now")
    pci_bus_id: Annotated[str, Field(max_length=64)] | None = None
    model: Annotated[str, Field(max_length=128)] | None = None
    memory_total_mb: int | None = None
    memory_used_mb: int | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    throttle: list[Annotated[str, Field(max_length=32)]] | None = Field(
        default=None,
        max_length=16,
        description="clock-throttle reasons that hurt: hw_slowdown, hw_thermal, sw_thermal, "
        "hw_power_brake",
    )
    ecc_volatile_corrected: int | None = None
    ecc_volatile_uncorrected: int | None = None
    ecc_aggregate_corrected: int | None = None
    ecc_aggregate_uncorrected: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failed: bool | None = None
    retired_pages: int | None = None
    nvlink_down: list[int] | None = Field(
        default=None, max_length=64, description="links that are down (of those that exist)"
    )
    persistence_mode: bool | None = None
    xids: list[XidEvent] = Field(default_factory=list, max_length=MAX_EVENTS)
    unknown: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=64, description="signals whose read failed"
    )


class DiskUse(_Msg):
    path: Annotated[str, Field(max_length=1024)]
    role: Literal["workload", "checkpoint", "state"]
    free_mb: int
    total_mb: int


class NodeSignals(_Msg):
    disks: list[DiskUse] | None = Field(default=None, max_length=16)
    memory_available_pct: float | None = None
    d_state: int | None = Field(default=None, description="processes stuck in D state")
    d_state_names: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=16
    )
    gpus_seen: int | None = Field(default=None, description="GPUs the backend finds now")
    sxids: list[SxidEvent] = Field(default_factory=list, max_length=MAX_EVENTS)
    unknown: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=64)


class HealthReport(_Msg):
    type: Literal["health"] = "health"
    sent_at: float = Field(description="the node's clock when sent: the server measures skew")
    boot_id: Annotated[str, Field(max_length=64)] = Field(
        default="", description="changes when the host reboots (/proc/sys/kernel/random/boot_id)"
    )
    full: bool = Field(default=False, description="a periodic report, not a change")
    backend: Literal["nvml", "fake", "none"] = "none"
    gpus: list[GpuSignals] = Field(default_factory=list, max_length=MAX_GPUS)
    node: NodeSignals = Field(default_factory=NodeSignals)
    dropped: int = Field(default=0, ge=0, description="events left out to bound the message")


# -- server -> agent: fault injection on a fake-GPU node (tests, demos) -----------------------

FaultKind = Literal[
    "xid",
    "ecc_uncorrected",
    "remap_failed",
    "remap_pending",
    "thermal",
    "nvlink_down",
    "vanish",
    "clear",
    "reboot",
]


class InjectFault(_Msg):
    """Make the fake backend show a fault. `clear` removes every fault of the GPU (all GPUs
    when gpu is None); `reboot` clears every fault and takes a new boot id, as a rebooted host
    would. A node with real GPUs ignores it (the server refuses before sending)."""

    type: Literal["inject_fault"] = "inject_fault"
    kind: FaultKind
    gpu: int | None = Field(default=None, ge=0, lt=MAX_GPUS)
    xid: int | None = Field(default=None, ge=0, le=100_000)
    subcode: int | None = None


class CheckNow(_Msg):
    """Run the health checks now and report, full (an operator's `node set-healthy` waits
    on it)."""

    type: Literal["check_now"] = "check_now"
