"""Small builders shared by the simulator tests."""

from __future__ import annotations

from corral.sim.cluster import Cluster, gpus_cluster
from corral.sim.engine import Engine, EngineConfig, Outcome
from corral.sim.policies import Policy
from corral.sim.workload import Job


def job(
    name: str,
    at: float,
    gpus: int,
    duration: float,
    replicas: int = 1,
    priority: int = 0,
    preemptible: bool = False,
) -> Job:
    return Job(
        id=name,
        submit_s=at,
        duration_s=duration,
        replicas=replicas,
        gpus=gpus,
        priority=priority,
        preemptible=preemptible,
        estimate_s=duration,
    )


def simulate(
    jobs: list[Job],
    policy: Policy,
    cluster: Cluster | None = None,
    **config: object,
) -> Outcome:
    cfg = EngineConfig(policy=policy, **config)  # type: ignore[arg-type]
    return Engine(cluster or gpus_cluster(4), jobs, cfg).run()


def jcts(outcome: Outcome) -> dict[str, float]:
    return {
        r.job.id: r.finished_at - r.job.submit_s for r in outcome.jobs if r.finished_at is not None
    }
