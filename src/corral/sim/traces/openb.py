"""The Alibaba GPU cluster trace 2023 ("OpenB", alibaba/clusterdata cluster-trace-gpu-v2023).

Nodes (`openb_node_list_gpu_node.csv`: sn, cpu_milli, memory_mib, gpu, model) and tasks
(`openb_pod_list_*.csv`: name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, qos,
pod_phase, creation_time, deletion_time, scheduled_time; times in seconds from the start).

How tasks become corral jobs:
- **Fractional GPUs are rounded up to one whole GPU.** corral allocates GPU devices by
  index (the placement contract has no shares, MPS or time-slicing), so a task asking for
  460 milli-GPUs holds one GPU. This overstates demand for the ~38% of tasks that share;
  `gpu_milli` is kept on each job and the notes count how many were rounded.
- Run time is `deletion_time - creation_time`; submit time is `creation_time`. Every task is
  kept whatever its final phase (the FGD paper replays them all).
- `gpu_spec` naming one model becomes `gpu_type`; a spec listing several models cannot be
  said with one `gpu_type`, so it is dropped (the task may run on any model) and counted.
- QoS: `LS` (latency-sensitive) and `Guaranteed` get priority 10; `Burstable` 5; `BE`
  (best effort) priority 0 and preemptible.
- The trace has no topology: nodes carry an empty topology path (flat), and no prices
  (the report shows cost as n/a).
- Replayed in time on its own node list the trace hardly loads the fleet: 8,152 tasks
  over 149 days ask for at most ~71 of the 6,212 GPUs at once, so nothing queues and
  utilization is ~0.3% (that is the trace, not a unit mix-up: times are seconds, durations
  a median of 9 minutes). The FGD paper uses it as a workload mix to fill the cluster
  with: `--fill 1.0`; or replay it on a smaller fleet (`--gpus N`).
"""

from __future__ import annotations

from pathlib import Path

from corral.sim.cluster import Cluster, SimNode
from corral.sim.traces.base import LoadedTrace, number, read_rows
from corral.sim.workload import Job

# GPU memory of the models in the trace; G2/G3 are Alibaba's own names, size unpublished.
GPU_MEMORY_MB = {"P100": 16384, "T4": 16384, "V100M16": 16384, "V100M32": 32768, "A10": 24576}
QOS_PRIORITY = {"LS": (10, False), "Guaranteed": (10, False), "Burstable": (5, False)}
BEST_EFFORT = (0, True)


def load_openb_nodes(path: str | Path) -> Cluster:
    path = Path(path)
    nodes: list[SimNode] = []
    for line, row in read_rows(path, ("sn", "cpu_milli", "memory_mib", "gpu", "model")):
        name = row["sn"].strip()
        model = row["model"].strip()
        nodes.append(
            SimNode(
                id=name,
                name=name,
                gpus=int(number(path, line, row, "gpu")),
                gpu_model=model,
                gpu_memory_mb=GPU_MEMORY_MB.get(model, 0),
                cpus=number(path, line, row, "cpu_milli") / 1000,
                memory_mb=int(number(path, line, row, "memory_mib")),
                disk_mb=0,
            )
        )
    return Cluster(tuple(nodes))


def load_openb_jobs(path: str | Path, *, max_jobs: int | None = None) -> LoadedTrace:
    path = Path(path)
    required = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "creation_time")
    rows: list[tuple[float, int, Job, bool]] = []
    for line, row in read_rows(path, required):
        created = number(path, line, row, "creation_time")
        deleted = number(path, line, row, "deletion_time", default=str(created))
        num_gpu = int(number(path, line, row, "num_gpu"))
        milli = int(number(path, line, row, "gpu_milli", default="0"))
        models = [m for m in (row.get("gpu_spec") or "").split("|") if m.strip()]
        priority, preemptible = QOS_PRIORITY.get((row.get("qos") or "").strip(), BEST_EFFORT)
        job = Job(
            id=row["name"].strip() or f"openb-{line}",
            submit_s=created,
            duration_s=max(0.0, deleted - created),
            gpus=num_gpu,
            cpus=number(path, line, row, "cpu_milli") / 1000,
            memory_mb=int(number(path, line, row, "memory_mib")),
            priority=priority,
            preemptible=preemptible,
            gpu_type=models[0].strip() if len(models) == 1 else None,
            gpu_milli=milli if num_gpu else 0,
        )
        rows.append((created, line, job, len(models) > 1))
    rows.sort(key=lambda r: (r[0], r[1]))
    kept = rows[:max_jobs]
    jobs = [r[2] for r in kept]
    # A share (0 < milli < 1000) is asked as num_gpu=1 and takes one whole GPU.
    rounded = sum(1 for j in jobs if j.gpus and 0 < j.gpu_milli < 1000)
    relaxed = sum(1 for r in kept if r[3])
    span_days = (jobs[-1].submit_s - jobs[0].submit_s) / 86400 if jobs else 0.0
    # The trace is a sample of a cluster's tasks over months: replayed in time on its own
    # node list it uses about 1% of the GPUs at its peak (the FGD paper fills instead).
    notes = [f"openb: {len(jobs)} tasks from {path.name}, submitted over {span_days:.1f} days"]
    if rounded:
        notes.append(f"openb: {rounded} fractional-GPU tasks rounded up to one whole GPU")
    if relaxed:
        notes.append(f"openb: {relaxed} multi-model gpu_spec constraints dropped")
    return LoadedTrace(jobs, notes)
