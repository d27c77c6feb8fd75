"""Jobs as the simulator sees them, gang shapes, and a seeded synthetic generator."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    """One job of a workload: a gang of `replicas` x (gpus, cpus, memory), run for `duration_s`.

    `duration_s` is the work the job needs when it runs uninterrupted; `math.inf` means it
    never ends (fill experiments). `estimate_s` is what the scheduler is told (a spec's
    `max_runtime`); None: no estimate, so no backfill guarantee.
    """

    id: str
    submit_s: float
    duration_s: float
    replicas: int = 1
    gpus: int = 1
    cpus: float = 0.0
    memory_mb: int = 0
    workspace: str = "default"
    priority: int = 0
    preemptible: bool = False
    gpu_type: str | None = None
    estimate_s: float | None = None
    gpu_milli: int = 1000  # OpenB: the share of one GPU originally asked for (1000 = whole)

    @property
    def total_gpus(self) -> int:
        return self.replicas * self.gpus


def gang_shape(total_gpus: int, node_gpus: int) -> tuple[int, int]:
    """(replicas, GPUs per replica) for a job of `total_gpus` on nodes of `node_gpus`.

    A job that fits one node is one replica. A larger one is split into the fewest equal
    replicas that divide it exactly (24 → 3x8, 12 → 2x6); when no split near the minimum
    count divides it, each replica is rounded up (13 → 2x7) — a little over-allocation is
    the price of a gang of equal replicas, which is what torchrun expects.
    """
    if total_gpus <= node_gpus or node_gpus <= 0:
        return 1, total_gpus
    fewest = math.ceil(total_gpus / node_gpus)
    for replicas in range(fewest, 2 * fewest + 1):
        if total_gpus % replicas == 0:
            return replicas, total_gpus // replicas
    return fewest, math.ceil(total_gpus / fewest)


# Philly-like mix (Jeon et al., ATC'19: most jobs use one GPU, a long tail of large gangs).
PHILLY_GPU_MIX: Mapping[int, float] = {
    1: 0.70,
    2: 0.10,
    4: 0.09,
    8: 0.07,
    16: 0.025,
    32: 0.01,
    64: 0.005,
}


@dataclass(frozen=True)
class SyntheticWorkload:
    """Poisson arrivals at `load` x the cluster's GPU capacity, lognormal durations.

    Durations: median `median_duration_s`, log-space spread `duration_sigma`, capped at
    `max_duration_s` (heavy-tailed like Philly, where most jobs are short and a few run days).
    A `preemptible_share` of jobs is low-priority (0) and preemptible; the rest priority 10.
    """

    jobs: int = 2000
    load: float = 0.85
    gpu_mix: Mapping[int, float] = field(default_factory=lambda: dict(PHILLY_GPU_MIX))
    median_duration_s: float = 1200.0
    duration_sigma: float = 1.6
    max_duration_s: float = 7 * 86400.0
    workspaces: tuple[str, ...] = ("vc-a", "vc-b", "vc-c", "vc-d")
    preemptible_share: float = 0.0
    estimate_factor: float = 1.0  # estimate_s = duration x this (1.0: exact estimates)


def synthetic_jobs(
    spec: SyntheticWorkload, capacity_gpus: int, node_gpus: int, seed: int
) -> list[Job]:
    """A seeded list of jobs, sorted by submit time; same seed and spec → same list."""
    if capacity_gpus < 1:
        raise ValueError("a synthetic workload needs a cluster with GPUs")
    rng = random.Random(f"synthetic:{seed}")
    sizes = [g for g in sorted(spec.gpu_mix) if g <= capacity_gpus]
    weights = [spec.gpu_mix[g] for g in sizes]
    gpus = rng.choices(sizes, weights, k=spec.jobs)
    mu = math.log(spec.median_duration_s)
    durations = [
        max(1.0, min(spec.max_duration_s, round(rng.lognormvariate(mu, spec.duration_sigma))))
        for _ in range(spec.jobs)
    ]
    # Arrival rate from the sampled work itself, so `load` is the offered load of this list.
    work = sum(g * d for g, d in zip(gpus, durations, strict=True)) / spec.jobs
    rate = spec.load * capacity_gpus / work
    jobs: list[Job] = []
    t = 0.0
    for i in range(spec.jobs):
        t += rng.expovariate(rate)
        replicas, per = gang_shape(gpus[i], node_gpus)
        preemptible = rng.random() < spec.preemptible_share
        jobs.append(
            Job(
                id=f"job-{i:06d}",
                submit_s=float(round(t)),
                duration_s=float(durations[i]),
                replicas=replicas,
                gpus=per,
                workspace=spec.workspaces[rng.randrange(len(spec.workspaces))],
                priority=0 if preemptible else 10,
                preemptible=preemptible,
                estimate_s=durations[i] * spec.estimate_factor,
            )
        )
    return jobs


def fill_workload(jobs: list[Job], capacity_gpus: int, target: float, seed: int) -> list[Job]:
    """The FGD paper's experiment: tasks drawn from `jobs` (with replacement, seeded) arrive
    one per second and never leave, until their GPU demand reaches `target` x capacity.

    Without departures free capacity only shrinks, so what is allocated as demand grows
    measures packing alone (and the engine may drop a task the moment it does not fit).
    """
    if not jobs:
        raise ValueError("a fill experiment needs at least one job to draw from")
    if not any(j.total_gpus for j in jobs):
        raise ValueError("a fill experiment needs jobs that ask for GPUs")
    rng = random.Random(f"fill:{seed}")
    out: list[Job] = []
    arrived = 0
    while arrived < target * capacity_gpus:
        j = jobs[rng.randrange(len(jobs))]
        out.append(
            Job(
                id=f"fill-{len(out):06d}-{j.id}",
                submit_s=float(len(out)),
                duration_s=math.inf,
                replicas=j.replicas,
                gpus=j.gpus,
                cpus=j.cpus,
                memory_mb=j.memory_mb,
                workspace=j.workspace,
                priority=j.priority,
                preemptible=j.preemptible,
                gpu_type=j.gpu_type,
                gpu_milli=j.gpu_milli,
            )
        )
        arrived += j.total_gpus
    return out


@dataclass(frozen=True)
class BurstyDay:
    """A day of a research team's queue: a trickle all day, and bursts when people submit
    together (a sweep after the morning meeting, after lunch, before leaving).

    Each burst submits `burst_jobs` jobs within `burst_spread_s` of its start; the trickle
    is Poisson at `trickle_per_h`. Jobs ask for `gpu_type` GPUs in whole-node multiples
    or less (1, 2, 4, 8, 16 GPUs), run lognormally around `median_duration_s`; a
    `preemptible_share` of them are preemptible (priority 0, may run on spot).
    """

    day_s: float = 86400.0
    bursts_at_h: tuple[float, ...] = (9.0, 13.5, 18.0)
    burst_jobs: int = 40
    burst_spread_s: float = 900.0
    trickle_per_h: float = 1.5
    gpu_mix: Mapping[int, float] = field(
        default_factory=lambda: {1: 0.15, 2: 0.1, 4: 0.15, 8: 0.45, 16: 0.15}
    )
    gpu_type: str | None = "H100"
    median_duration_s: float = 2700.0
    duration_sigma: float = 0.5
    preemptible_share: float = 0.3


def bursty_jobs(spec: BurstyDay, seed: int, node_gpus: int = 8) -> list[Job]:
    """A seeded bursty day, sorted by submit time; same seed and spec -> same list."""
    rng = random.Random(f"bursty:{seed}")
    times: list[float] = []
    for hour in spec.bursts_at_h:
        start = hour * 3600.0
        times += [start + rng.uniform(0.0, spec.burst_spread_s) for _ in range(spec.burst_jobs)]
    t = 0.0
    while spec.trickle_per_h > 0:
        t += rng.expovariate(spec.trickle_per_h / 3600.0)
        if t >= spec.day_s:
            break
        times.append(t)
    times.sort()
    sizes = sorted(spec.gpu_mix)
    weights = [spec.gpu_mix[g] for g in sizes]
    mu = math.log(spec.median_duration_s)
    jobs = []
    for i, at in enumerate(times):
        total = rng.choices(sizes, weights)[0]
        replicas, per = gang_shape(total, node_gpus)
        duration = float(max(60, round(rng.lognormvariate(mu, spec.duration_sigma))))
        preemptible = rng.random() < spec.preemptible_share
        jobs.append(
            Job(
                id=f"day-{i:05d}",
                submit_s=float(round(at)),
                duration_s=duration,
                replicas=replicas,
                gpus=per,
                cpus=8.0 * per,
                memory_mb=65_536 * per,
                priority=0 if preemptible else 10,
                preemptible=preemptible,
                gpu_type=spec.gpu_type,
                estimate_s=duration,
            )
        )
    return jobs
