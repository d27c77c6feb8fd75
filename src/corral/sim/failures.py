"""Node failures: independent Poisson processes per node and cause, and repair times.

The built-in profile is Meta's Llama 3 405B pre-training run (The Llama 3 Herd of Models,
2024, table 5): 419 unexpected interruptions in 54 days on 16,384 H100 GPUs in 2,048 nodes
of 8. The paper's percentages contain an error, so rates come from its counts: a cause
seen `count` times gives each node a rate of count / (2,048 nodes x 54 days). Causes that
live in a GPU scale with the node's GPUs (a 2-GPU node sees a quarter of the GPU faults of
an 8-GPU host); the others are per host.

The paper gives no repair times; the ones here are assumptions, named per cause so a study
can change them: a hardware swap takes hours, a software fault a reboot.

A GPU cause (gpu_faults.GPU_FAULTS) is drawn as a concrete signal (an Xid, a throttle) and
judged by the control plane's rules (core.health.assess): the repair they ask for decides
whether the node leaves the pool and for how long (a reboot: minutes; inspect-hardware: the
cause's hardware repair time; a degraded GPU: not at all).

Each node draws from its own seeded stream, so the failures a node sees depend only on the
seed and the node — the same for every scheduling policy compared in one study.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from corral.sim.gpu_faults import GPU_FAULT_BY_CAUSE, Consequence, consequence, out_s

DAY_S = 86400.0
HOUR_S = 3600.0


@dataclass(frozen=True)
class Cause:
    name: str
    count: int  # interruptions seen in the profile's fleet and period
    repair_s: float  # mean time the node stays down (exponentially distributed)
    per_gpu: bool = False  # scales with the node's GPU count


@dataclass(frozen=True)
class FailureProfile:
    name: str
    nodes: int
    gpus_per_node: int
    days: float
    causes: tuple[Cause, ...]

    @property
    def total(self) -> int:
        return sum(c.count for c in self.causes)

    def rate_per_s(self, cause: Cause, node_gpus: int) -> float:
        """Failures per second of one node of `node_gpus` GPUs, from `cause`."""
        rate = cause.count / (self.nodes * self.days * DAY_S)
        return rate * node_gpus / self.gpus_per_node if cause.per_gpu else rate


_GPU_SWAP = 4 * HOUR_S  # drain, diagnose, swap the board or the node from spares
_HOST_SWAP = 6 * HOUR_S
_NETWORK = 2 * HOUR_S
_RESTART = 0.5 * HOUR_S  # reboot and rejoin

LLAMA3_405B = FailureProfile(
    name="llama3",
    nodes=2048,
    gpus_per_node=8,
    days=54,
    causes=(
        Cause("faulty GPU", 148, _GPU_SWAP, per_gpu=True),
        Cause("GPU HBM3 memory", 72, _GPU_SWAP, per_gpu=True),
        Cause("software bug", 54, _RESTART),
        Cause("network switch/cable", 35, _NETWORK),
        Cause("host maintenance", 32, 2 * HOUR_S),
        Cause("GPU SRAM memory", 19, _GPU_SWAP, per_gpu=True),
        Cause("GPU system processor", 17, _GPU_SWAP, per_gpu=True),
        Cause("NIC", 7, _NETWORK),
        Cause("NCCL watchdog timeout", 7, _RESTART),
        Cause("silent data corruption", 6, _GPU_SWAP, per_gpu=True),
        Cause("GPU thermal interface/sensor", 6, _GPU_SWAP, per_gpu=True),
        Cause("SSD", 3, _HOST_SWAP),
        Cause("power supply", 3, _HOST_SWAP),
        Cause("server chassis", 2, _HOST_SWAP),
        Cause("IO expansion board", 2, _HOST_SWAP),
        Cause("dependency", 2, _RESTART),
        Cause("CPU", 2, _HOST_SWAP),
        Cause("system memory", 2, _HOST_SWAP),
    ),
)

PROFILES = {"llama3": LLAMA3_405B}


@dataclass(frozen=True)
class Failure:
    at: float
    cause: int  # index into the profile's causes
    repair_s: float  # how long the node is out of the pool (0: it stays)
    # GPU causes: the signal drawn and core.health's verdict on it; None for the others.
    fault: Consequence | None = None


class NodeFailures:
    """The failure process of one node: call `next(t)` when the node comes up at `t`."""

    def __init__(self, profile: FailureProfile, node_id: str, node_gpus: int, seed: int) -> None:
        self._profile = profile
        self._rng = random.Random(f"failures:{profile.name}:{seed}:{node_id}")
        # The signal a GPU fault shows as, from a stream of its own: the times and causes
        # drawn above stay those of a profile without GPU signals.
        self._signals = random.Random(f"gpu-faults:{profile.name}:{seed}:{node_id}")
        self._gpus = node_gpus
        self._rates = [profile.rate_per_s(c, node_gpus) for c in profile.causes]
        self._total = sum(self._rates)

    def next(self, up_since: float) -> Failure | None:
        """The node's next failure after `up_since` (memoryless: a down node cannot fail)."""
        if self._total <= 0:
            return None
        at = up_since + self._rng.expovariate(self._total)
        # Superposition: one stream at the summed rate, the cause drawn by rate.
        cause = self._rng.choices(range(len(self._rates)), self._rates)[0]
        spec = self._profile.causes[cause]
        repair = self._rng.expovariate(1 / spec.repair_s)  # the hardware repair time
        row = GPU_FAULT_BY_CAUSE.get(spec.name) if spec.per_gpu else None
        if row is None:
            return Failure(at, cause, repair)
        verdict = consequence(row.draw(self._signals), self._gpus)
        return Failure(at, cause, out_s(verdict, repair), verdict)


def failure_counts(
    profile: FailureProfile, nodes: int, node_gpus: int, horizon_s: float, seed: int
) -> dict[str, int]:
    """Interruptions per cause on `nodes` identical nodes over `horizon_s` (with repairs)."""
    counts = {c.name: 0 for c in profile.causes}
    for i in range(nodes):
        process = NodeFailures(profile, f"node-{i}", node_gpus, seed)
        t = 0.0
        while (f := process.next(t)) is not None and f.at < horizon_s:
            counts[profile.causes[f.cause].name] += 1
            t = f.at + f.repair_s
    return counts
