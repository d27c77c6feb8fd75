"""Gang shapes and the seeded synthetic generator."""

from __future__ import annotations

import math

import pytest

from corral.sim.workload import SyntheticWorkload, fill_workload, gang_shape, synthetic_jobs


@pytest.mark.parametrize(
    ("total", "node", "shape"),
    [
        (1, 8, (1, 1)),
        (8, 8, (1, 8)),
        (12, 8, (2, 6)),
        (16, 8, (2, 8)),
        (24, 8, (3, 8)),
        (13, 8, (2, 7)),
        (64, 4, (16, 4)),
        (0, 8, (1, 0)),
    ],
)
def test_gang_shape(total: int, node: int, shape: tuple[int, int]) -> None:
    assert gang_shape(total, node) == shape


def test_synthetic_jobs_are_seeded_and_offer_the_asked_load() -> None:
    spec = SyntheticWorkload(jobs=3000, load=0.8)
    jobs = synthetic_jobs(spec, 512, 8, seed=4)
    assert jobs == synthetic_jobs(spec, 512, 8, seed=4)
    assert jobs != synthetic_jobs(spec, 512, 8, seed=5)
    span = jobs[-1].submit_s - jobs[0].submit_s
    work = sum(j.total_gpus * j.duration_s for j in jobs)
    assert work / (512 * span) == pytest.approx(0.8, rel=0.1)
    assert all(j.total_gpus <= 64 for j in jobs)


def test_fill_draws_until_demand_reaches_the_target() -> None:
    base = synthetic_jobs(SyntheticWorkload(jobs=50), 64, 8, seed=1)
    jobs = fill_workload(base, 64, 1.5, seed=1)
    demand = [j.total_gpus for j in jobs]
    assert sum(demand) >= 96 > sum(demand[:-1])
    assert all(j.duration_s == math.inf for j in jobs)
    assert [j.submit_s for j in jobs] == [float(i) for i in range(len(jobs))]
