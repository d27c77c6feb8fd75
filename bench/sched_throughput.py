"""Scheduler throughput: gang placements per second and per-decision latency, in memory.

A virtual-clock replay, single process, fixed seed, no GPU: 10,000 nodes (281 racks of
32 nodes x 8 H100, and 56 NVL72-like racks of 18 nodes x 4 GB200), 100,000 jobs of 1, 2,
4, 8, 16 and 64 GPUs arriving over virtual time (Poisson, offered load LOAD of the fleet),
four workspaces with guaranteed quotas, four priority classes, 20% preemptible, 70% with
a max_runtime, some gangs requiring one rack. Every ROUND_S virtual seconds the replay
hands a Snapshot to the real scheduler (a corral.core.scheduler.Scheduler: the plans of
`place()`, with its index kept between rounds), timing each decision as the round yields
it; it applies the plan (placements, preemptions; a victim resumes from its last 30-min
checkpoint) and ends jobs at their true runtime.

placements_per_s = placements ÷ seconds inside the scheduler (index refresh, round
set-up and every decision, placed or not). decision_p50/p99_ms: per job decision.
The baseline, FIFO + first fit (each replica on the first node that fits in list order,
skipping jobs that do not fit; no topology, quotas or indexes), decides on the very same
snapshots every BASELINE_EVERY rounds, capped at BASELINE_CAP_S each; its decisions are
thrown away. A warm-up replay of WARMUP_ROUNDS rounds, then REPETITIONS whole replays:
the median is reported.
"""

from __future__ import annotations

import gc
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace

from corral.core.placement import (
    Demand,
    GpuSlot,
    NodeState,
    PendingJob,
    ReplicaPlacement,
    RunningJob,
    Snapshot,
)
from corral.core.scheduler import (
    DEFAULT_PRIORITY_CLASSES,
    Round,
    Scheduler,
    fragmentation_counts,
)

SEED = 1
JOBS = 100_000
H100_RACKS, H100_RACK_NODES = 281, 32  # 8,992 nodes x 8 GPUs
NVL_RACKS, NVL_RACK_NODES = 56, 18  # 1,008 nodes x 4 GPUs
ZONES = 4
LOAD = 0.95  # offered GPU-seconds ÷ fleet GPU-seconds
ROUND_S = 60.0
BASELINE_EVERY = 50
BASELINE_CAP_S = 1.0
REPETITIONS = 3
WARMUP_ROUNDS = 20
PREEMPTIBLE = 0.2
SIZES = {1: 0.30, 2: 0.20, 4: 0.20, 8: 0.18, 16: 0.08, 64: 0.04}
CLASSES = {"endpoint": 0.05, "dev": 0.15, "train": 0.45, "batch": 0.35}
# H100 jobs by workspace, and guarantees: 92% of the H100s and 87% of the GB200s are
# guaranteed; the rest is a pool any workspace may use, and what an owner leaves idle is
# lent to preemptible jobs.
H100_TEAMS = {"team-a": 0.40, "team-b": 0.25, "team-c": 0.10, "team-d": 0.25}
QUOTAS = {
    "team-a": {"H100": 28_000},
    "team-b": {"H100": 18_000},
    "team-c": {"GB200": 3_500, "H100": 6_000},
    "team-d": {"H100": 14_000},
}
CHECKPOINT_EVERY_S = 1800.0
MEDIAN_RUNTIME_S = 1800.0
CPUS_PER_GPU, MEMORY_PER_GPU = 8.0, 64_000


@dataclass
class Job:
    pending: PendingJob
    duration: float  # true runtime left; max_runtime is only an estimate of it
    arrive: float
    started: float = 0.0
    replicas: tuple[ReplicaPlacement, ...] = ()


def build_fleet() -> dict[str, NodeState]:
    nodes: dict[str, NodeState] = {}

    def add(name: str, model: str, mem: int, gpus: int, path: tuple[str, ...]) -> None:
        slots = tuple(GpuSlot(i, model, mem) for i in range(gpus))
        nodes[name] = NodeState(name, name, slots, 224.0, 2_000_000, 10_000_000, topology=path)

    for r in range(H100_RACKS):
        for n in range(H100_RACK_NODES):
            path = ("dc", "eu-1", f"z{r % ZONES}", f"h{r:03d}", f"h{r:03d}n{n:02d}")
            add(path[-1], "NVIDIA H100 80GB HBM3", 81_559, 8, path)
    for r in range(NVL_RACKS):
        for n in range(NVL_RACK_NODES):
            path = ("dc", "eu-1", "znvl", f"nvl{r:02d}", f"nvl{r:02d}n{n:02d}")
            add(path[-1], "NVIDIA GB200", 189_471, 4, path)
    return nodes


def make_jobs(rng: random.Random, capacity_gpus: int) -> list[Job]:
    sizes, size_w = list(SIZES), list(SIZES.values())
    prios, prio_w = list(CLASSES), list(CLASSES.values())
    mean_size = sum(s * w for s, w in SIZES.items())
    mean_runtime = MEDIAN_RUNTIME_S * math.exp(1.2**2 / 2)
    rate = LOAD * capacity_gpus / (mean_size * mean_runtime)  # jobs per virtual second
    jobs, t = [], 0.0
    for i in range(JOBS):
        t += rng.expovariate(rate)
        size = rng.choices(sizes, size_w)[0]
        gb200 = rng.random() < 0.08
        per_node = 4 if gb200 else 8
        replicas, gpus = (1, size) if size <= per_node else (size // per_node, per_node)
        ws = "team-c" if gb200 else rng.choices(list(H100_TEAMS), list(H100_TEAMS.values()))[0]
        duration = min(86_400.0, max(60.0, rng.lognormvariate(math.log(MEDIAN_RUNTIME_S), 1.2)))
        estimate = duration * rng.uniform(1.0, 1.5) if rng.random() < 0.7 else None
        rack = replicas > 1 and (gb200 or rng.random() < 0.3)
        pending = PendingJob(
            id=f"j{i:06d}",
            replicas=replicas,
            demand=Demand(
                gpus, "GB200" if gb200 else "H100", None, CPUS_PER_GPU * gpus, MEMORY_PER_GPU * gpus
            ),
            priority=DEFAULT_PRIORITY_CLASSES[rng.choices(prios, prio_w)[0]],
            submitted_at=t,
            workspace=ws,
            preemptible=rng.random() < PREEMPTIBLE,
            topology="rack" if rack else None,
            max_runtime_s=estimate,
        )
        jobs.append(Job(pending, duration, t))
    return jobs


class Sim:
    def __init__(self, nodes: dict[str, NodeState], jobs: list[Job]) -> None:
        self.base = nodes
        self.nodes = dict(nodes)
        self.used: dict[str, set[int]] = {n: set() for n in nodes}
        self.dirty: set[str] = set()
        self.arrivals = jobs
        self.next_arrival = 0
        self.pending: dict[str, Job] = {}
        self.running: dict[str, Job] = {}
        self.running_view: dict[str, RunningJob] = {}
        self.placements = self.preemptions = 0
        self.never = 0

    def snapshot(self, now: float) -> Snapshot:
        while (
            self.next_arrival < len(self.arrivals)
            and self.arrivals[self.next_arrival].arrive <= now
        ):
            job = self.arrivals[self.next_arrival]
            self.pending[job.pending.id] = job
            self.next_arrival += 1
        for job_id in [j for j, job in self.running.items() if job.started + job.duration <= now]:
            self._stop(job_id)
        for name in self.dirty:
            used = self.used[name]
            self.nodes[name] = replace(
                self.base[name],
                used_gpus=frozenset(used),
                used_cpus=CPUS_PER_GPU * len(used),
                used_memory_mb=MEMORY_PER_GPU * len(used),
            )
        self.dirty.clear()
        return Snapshot(
            tuple(self.nodes.values()),
            tuple(j.pending for j in self.pending.values()),
            tuple(self.running_view.values()),
            QUOTAS,
        )

    def apply(self, now: float, round_: Round) -> None:
        for job_id in round_.never_fits:  # the server marks these; they leave the queue
            del self.pending[job_id]
            self.never += 1
        for p in round_.preemptions:
            job = self.running[p.job_id]
            done = now - job.started
            kept = math.floor(done / CHECKPOINT_EVERY_S) * CHECKPOINT_EVERY_S
            self._stop(p.job_id)
            job.duration -= kept
            self.pending[p.job_id] = job
            self.preemptions += 1
        for gang in round_.placements:
            job = self.pending.pop(gang.job_id)
            job.started, job.replicas = now, gang.replicas
            for r in gang.replicas:
                self.used[r.node_id].update(r.gpus)
                self.dirty.add(r.node_id)
            self.running[gang.job_id] = job
            est = job.pending.max_runtime_s
            self.running_view[gang.job_id] = RunningJob(
                gang.job_id,
                job.pending.workspace,
                job.pending.priority,
                job.pending.preemptible,
                job.pending.demand,
                gang.replicas,
                now,
                None,
                None if est is None else now + est,
            )
            self.placements += 1

    def _stop(self, job_id: str) -> None:
        job = self.running.pop(job_id)
        del self.running_view[job_id]
        for r in job.replicas:
            self.used[r.node_id].difference_update(r.gpus)
            self.dirty.add(r.node_id)
        job.replicas = ()

    def fragmentation(self) -> float:
        return fragmentation_counts(
            (len(n.gpus) - len(self.used[name]), len(n.gpus)) for name, n in self.base.items()
        )


def fifo_first_fit(snapshot: Snapshot, cap_s: float) -> tuple[int, float]:
    """The naive baseline: FIFO order, each replica on the first node that fits."""
    t0 = time.perf_counter()
    nodes = list(snapshot.nodes)
    free = [[g.index for g in n.gpus if g.healthy and g.index not in n.used_gpus] for n in nodes]
    cpu = [n.cpus - n.used_cpus for n in nodes]
    mem = [n.memory_mb - n.used_memory_mb for n in nodes]
    placed = 0
    for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.id)):
        d = job.demand
        want = d.gpu_type.upper() if d.gpu_type else ""
        chosen: list[int] = []
        for i, n in enumerate(nodes):
            while (
                len(chosen) < job.replicas
                and want in n.gpus[0].model.upper()
                and len(free[i]) - d.gpus * chosen.count(i) >= d.gpus
                and cpu[i] - d.cpus * chosen.count(i) >= d.cpus
                and mem[i] - d.memory_mb * chosen.count(i) >= d.memory_mb
            ):
                chosen.append(i)
            if len(chosen) == job.replicas:
                break
        if len(chosen) == job.replicas:
            for i in chosen:
                del free[i][: d.gpus]
                cpu[i] -= d.cpus
                mem[i] -= d.memory_mb
            placed += 1
        if time.perf_counter() - t0 > cap_s:
            break
    return placed, time.perf_counter() - t0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Run:
    placements: int = 0
    preemptions: int = 0
    never: int = 0
    rounds: int = 0
    inside_s: float = 0.0  # inside the scheduler: index refresh + round set-up + decisions
    inside_cpu_s: float = 0.0  # the same in CPU time: steadier on a shared, noisy host
    latencies: list[float] = field(default_factory=list)
    setup_s: list[float] = field(default_factory=list)
    base_placed: int = 0
    base_s: float = 0.0
    ours_sampled: int = 0
    ours_sampled_s: float = 0.0
    fragmentation: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.placements / self.inside_s

    @property
    def cpu_rate(self) -> float:
        return self.placements / self.inside_cpu_s

    @property
    def baseline_rate(self) -> float:
        return self.base_placed / self.base_s if self.base_s else 0.0


def run_once(rep: str, max_rounds: int | None = None) -> Run:
    """One whole replay; the same seed gives the same jobs and the same decisions."""
    rng = random.Random(SEED)
    nodes = build_fleet()
    capacity = sum(len(n.gpus) for n in nodes.values())
    sim = Sim(nodes, make_jobs(rng, capacity))
    # A long-lived process (the server, this replay) freezes what it built at start-up, so
    # the cyclic GC does not rescan 100,000 queued jobs on every full collection.
    gc.collect()
    gc.freeze()
    out = Run()
    now = 0.0
    clock = time.perf_counter
    scheduler = Scheduler()
    while sim.next_arrival < len(sim.arrivals) or sim.pending:
        now += ROUND_S
        snapshot = sim.snapshot(now)
        if not snapshot.pending:
            continue
        out.rounds += 1
        c0 = time.process_time()
        t0 = clock()
        round_ = scheduler.round(snapshot, now)
        t1 = clock()
        decisions = round_.decisions()
        while True:
            start = clock()
            if next(decisions, None) is None:
                break
            out.latencies.append(clock() - start)
        t2 = clock()
        out.inside_cpu_s += time.process_time() - c0
        out.setup_s.append(t1 - t0)
        out.inside_s += t2 - t0
        before = sim.placements
        sim.apply(now, round_)
        if out.rounds % BASELINE_EVERY == 1:
            placed, took = fifo_first_fit(snapshot, BASELINE_CAP_S)
            out.base_placed += placed
            out.base_s += took
            out.ours_sampled += sim.placements - before
            out.ours_sampled_s += t2 - t0
            out.fragmentation.append(sim.fragmentation())
            print(
                f"{rep} round {out.rounds} t={now / 3600:.1f}h pending={len(snapshot.pending)} "
                f"running={len(sim.running)} placed={sim.placements} "
                f"round={1000 * (t2 - t0):.0f}ms set-up={1000 * (t1 - t0):.0f}ms "
                f"fifo={placed} in {took:.2f}s",
                file=sys.stderr,
            )
        if max_rounds is not None and out.rounds >= max_rounds:
            break
    gc.unfreeze()
    out.placements, out.preemptions, out.never = sim.placements, sim.preemptions, sim.never
    return out


def main() -> None:
    run_once("warm-up", max_rounds=WARMUP_ROUNDS)
    runs = [run_once(f"rep {i + 1}/{REPETITIONS}") for i in range(REPETITIONS)]
    mid = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    value = statistics.median(r.rate for r in runs)
    baseline = statistics.median(r.baseline_rate for r in runs)
    latencies = [t for r in runs for t in r.latencies]
    print(
        json.dumps(
            {
                "bench": "sched_throughput",
                "metric": "placements_per_s",
                "value": round(value, 1),
                "unit": "1/s",
                "higher_is_better": True,
                "baseline": "fifo_first_fit",
                "baseline_value": round(baseline, 1),
                "ratio": round(value / baseline, 2) if baseline else None,
                "extra": {
                    "decision_p50_ms": round(1000 * statistics.median(latencies), 4),
                    "decision_p99_ms": round(1000 * quantile(latencies, 0.99), 3),
                    "decision_max_ms": round(1000 * max(latencies), 2),
                    "round_setup_p50_ms": round(1000 * statistics.median(mid.setup_s), 2),
                    "placements_per_cpu_s": round(statistics.median(r.cpu_rate for r in runs), 1),
                    "same_snapshots_ratio": round(
                        (mid.ours_sampled / mid.ours_sampled_s) / mid.baseline_rate, 2
                    )
                    if mid.baseline_rate
                    else None,
                    "fragmentation": round(statistics.mean(mid.fragmentation), 4),
                    "decisions": len(mid.latencies),
                    "placements": mid.placements,
                    "preemptions": mid.preemptions,
                    "never_fits": mid.never,
                    "rates_per_repetition": [round(r.rate, 1) for r in runs],
                },
                "conditions": {
                    "seed": SEED,
                    "nodes": H100_RACKS * H100_RACK_NODES + NVL_RACKS * NVL_RACK_NODES,
                    "racks": f"{H100_RACKS}x{H100_RACK_NODES}x8 H100 + {NVL_RACKS}x"
                    f"{NVL_RACK_NODES}x4 GB200",
                    "jobs": JOBS,
                    "sizes": SIZES,
                    "priority_classes": CLASSES,
                    "preemptible": PREEMPTIBLE,
                    "quotas": QUOTAS,
                    "load": LOAD,
                    "round_s": ROUND_S,
                    "rounds": mid.rounds,
                    "repetitions": REPETITIONS,
                    "warmup_rounds": WARMUP_ROUNDS,
                    "baseline_every_rounds": BASELINE_EVERY,
                    "baseline_cap_s": BASELINE_CAP_S,
                    "gc": "frozen after set-up",
                    "python": sys.version.split()[0],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
