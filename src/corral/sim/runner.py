"""`run(SimOptions) -> SimReport`: load the cluster and the workload, simulate, report."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from corral.sim.cluster import Cluster, gpus_cluster, load_cluster
from corral.sim.engine import Engine, EngineConfig, ProgressHook
from corral.sim.failures import PROFILES
from corral.sim.options import SYNTHETIC_DEFAULT_GPUS, SimOptions
from corral.sim.policies import new_policy
from corral.sim.report import SimReport, build_report, supply_figures
from corral.sim.supply import Supply, load_supply, slot_cluster
from corral.sim.traces import LoadedTrace, load_openb_jobs, load_openb_nodes, load_philly_csv
from corral.sim.workload import Job, bursty_jobs, fill_workload, synthetic_jobs
from corral.spec.errors import FieldError, SpecError

OPENB_NODES = "openb_node_list_gpu_node.csv"
OPENB_PODS = "openb_pod_list_default.csv"


def _openb_paths(trace: Path) -> tuple[Path, Path]:
    """(pod list, node list): a directory holds both; a pod list's node list sits beside it."""
    if trace.is_dir():
        return trace / OPENB_PODS, trace / OPENB_NODES
    return trace, trace.with_name(OPENB_NODES)


def load_cluster_for(options: SimOptions) -> Cluster:
    if options.pools is not None:
        return slot_cluster(load_supply(options.pools))
    if options.cluster is not None:
        return load_cluster(options.cluster)
    if options.gpus is not None:
        return gpus_cluster(options.gpus)
    if options.format == "openb" and options.trace is not None:
        nodes = _openb_paths(options.trace)[1]
        if not nodes.exists():
            raise SpecError(
                "sim options",
                [FieldError("trace", f"no node list at {nodes}: give --gpus N or --cluster FILE")],
            )
        return load_openb_nodes(nodes)
    return gpus_cluster(SYNTHETIC_DEFAULT_GPUS)


def load_workload(options: SimOptions, cluster: Cluster) -> LoadedTrace:
    node_gpus = cluster.max_gpus_per_node
    if options.format == "openb" and options.trace is not None:
        return load_openb_jobs(_openb_paths(options.trace)[0], max_jobs=options.max_jobs)
    if options.format == "philly-csv" and options.trace is not None:
        return load_philly_csv(
            options.trace,
            node_gpus=node_gpus,
            estimate_factor=options.estimate_factor,
            max_jobs=options.max_jobs,
        )
    if options.format == "bursty":
        day = bursty_jobs(options.bursty, options.seed, node_gpus or 8)[: options.max_jobs]
        return LoadedTrace(day, [f"bursty day: {len(day)} jobs"])
    spec = options.synthetic
    if options.max_jobs is not None:
        spec = replace(spec, jobs=options.max_jobs)
    jobs = synthetic_jobs(spec, cluster.total_gpus, node_gpus, options.seed)
    return LoadedTrace(jobs, [f"synthetic: {len(jobs)} jobs, offered load {spec.load:g}"])


def _hosts_for(job: Job, shapes: Counter[tuple[str, int, float, int]]) -> int:
    """How many replicas of `job` the empty cluster (as node shapes x count) can hold."""
    want = job.gpu_type.upper() if job.gpu_type else None
    total = 0
    for (model, gpus, cpus, memory), count in shapes.items():
        if want is not None and want not in model.upper():
            continue
        per = min(
            gpus // job.gpus if job.gpus else job.replicas,
            int((cpus + 1e-9) // job.cpus) if job.cpus else job.replicas,
            memory // job.memory_mb if job.memory_mb else job.replicas,
        )
        total += per * count
    return total


def fitting_jobs(jobs: list[Job], cluster: Cluster) -> list[Job]:
    """The jobs that could run on the empty cluster; others would wait forever (and block
    FIFO), so they are left out and counted in the report's notes."""
    shapes = Counter((n.gpu_model, n.gpus, n.cpus, n.memory_mb) for n in cluster.nodes)
    room: dict[tuple[str | None, int, float, int, int], int] = {}
    kept = []
    for j in jobs:
        key = (j.gpu_type, j.gpus, j.cpus, j.memory_mb, j.replicas)
        if key not in room:
            room[key] = _hosts_for(j, shapes)
        if room[key] >= j.replicas:
            kept.append(j)
    return kept


def run(options: SimOptions, progress: ProgressHook | None = None) -> SimReport:
    """Simulate `options` and return the report; writes the plot if `options.plot` is set.

    `progress` is called now and then with how far the run is (see engine.Progress)."""
    options.check()
    cluster = load_cluster_for(options)
    supply = None
    if options.pools is not None:
        index = {n.id: i for i, n in enumerate(cluster.nodes)}
        supply = Supply(load_supply(options.pools), index, fixed=options.fixed_pools)
    loaded = load_workload(options, cluster)
    notes = list(loaded.notes)
    jobs = fitting_jobs(loaded.jobs, cluster)
    if len(jobs) < len(loaded.jobs):
        notes.append(f"{len(loaded.jobs) - len(jobs)} jobs that fit no node were left out")
    config = EngineConfig(
        policy=new_policy(options.policy),
        checkpoint_interval_s=options.checkpoint_interval_s,
        round_s=options.round_s,
        failures=PROFILES[options.failures] if options.failures else None,
        seed=options.seed,
        until_s=options.until_s,
    )
    if options.fill is not None:
        jobs = fill_workload(jobs, cluster.total_gpus, options.fill, options.seed)
        notes.append(f"fill: {len(jobs)} jobs drawn to {options.fill:g}x capacity, never ending")
        last = jobs[-1].submit_s
        until = last if options.until_s is None else min(options.until_s, last)
        config = replace(config, checkpoint_interval_s=None, drop_unplaced=True, until_s=until)
    outcome = Engine(cluster, jobs, config, supply).run(progress)
    if supply is not None:
        bill_end = max(outcome.end_s, options.bill_until_s or 0.0)
        notes.append(f"nodes billed from launch to release, until {bill_end / 3600:.1f} h")
    report = build_report(
        outcome,
        policy=options.policy,
        seed=options.seed,
        nodes=len(cluster.nodes),
        gpus=cluster.total_gpus,
        fill=options.fill is not None,
        priced=any(n.price_per_gpu_hour > 0 for n in cluster.nodes),
        notes=tuple(notes),
        elastic=supply is not None and not options.fixed_pools,
    )
    if supply is not None:
        label = "fixed pools" if options.fixed_pools else f"{options.policy} + autoscaler"
        report = replace(report, policy=label, **supply_figures(supply, bill_end))
    if options.plot is not None:
        from corral.sim.plot import plot_reports

        plot_reports([report], options.plot)
    return report
