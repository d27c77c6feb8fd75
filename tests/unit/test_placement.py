"""The first placement function: fit, gangs all-or-nothing, best fit, ports."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.core.placement import (
    FIRST_MASTER_PORT,
    Demand,
    GpuSlot,
    NodeState,
    PendingJob,
    Snapshot,
    place,
)


def node(
    name: str, gpus: int = 8, model: str = "H100", cpus: float = 64, **kw: object
) -> NodeState:
    slots = tuple(GpuSlot(i, model, 81920) for i in range(gpus))
    return NodeState(
        id=name, name=name, gpus=slots, cpus=cpus, memory_mb=512_000, disk_mb=10**6, **kw
    )  # type: ignore[arg-type]


def job(
    name: str,
    replicas: int = 1,
    gpus: int = 0,
    at: float = 0.0,
    prio: int = 0,
    gpu_type: str | None = None,
) -> PendingJob:
    return PendingJob(
        name, replicas, Demand(gpus=gpus, gpu_type=gpu_type, cpus=1, memory_mb=1024), prio, at
    )


def test_a_gang_is_placed_whole_or_not_at_all() -> None:
    plan = place(Snapshot((node("a", 8), node("b", 4)), (job("big", replicas=2, gpus=8),)), 0.0)
    assert plan.placements == ()
    assert "big" in plan.pending_reasons
    assert "needs 2×" in plan.pending_reasons["big"]


def test_gpus_are_given_by_index_and_never_twice() -> None:
    plan = place(Snapshot((node("a", 8),), (job("x", gpus=3), job("y", gpus=5, at=1))), 0.0)
    got = {g.job_id: g.replicas[0].gpus for g in plan.placements}
    assert got == {"x": (0, 1, 2), "y": (3, 4, 5, 6, 7)}


def test_best_fit_keeps_a_whole_node_free_for_a_big_job() -> None:
    # Node a already has 6 of 8 GPUs used; a 2-GPU job belongs there, not on empty node b.
    busy = node("a", 8, used_gpus=frozenset(range(6)))
    plan = place(
        Snapshot((busy, node("b", 8)), (job("small", gpus=2), job("big", gpus=8, at=1))), 0.0
    )
    where = {g.job_id: g.replicas[0].node_id for g in plan.placements}
    assert where == {"small": "a", "big": "b"}


def test_gpu_model_must_match() -> None:
    plan = place(
        Snapshot(
            (node("a", 8, model="NVIDIA A100-SXM4-80GB"),),
            (job("h", gpus=1, gpu_type="H100"), job("a", gpus=1, gpu_type="a100")),
        ),
        0.0,
    )
    assert [g.job_id for g in plan.placements] == ["a"]


def test_higher_priority_goes_first() -> None:
    plan = place(
        Snapshot((node("a", 8),), (job("low", gpus=8, at=0), job("high", gpus=8, at=5, prio=10))),
        0.0,
    )
    assert [g.job_id for g in plan.placements] == ["high"]


def test_two_gangs_on_one_node_get_different_master_ports() -> None:
    plan = place(Snapshot((node("a", 0),), (job("x"), job("y", at=1))), 0.0)
    assert sorted(g.master_port for g in plan.placements) == [
        FIRST_MASTER_PORT,
        FIRST_MASTER_PORT + 1,
    ]


def test_an_unhealthy_gpu_is_never_given() -> None:
    slots = (GpuSlot(0, "H100", 81920, healthy=False), GpuSlot(1, "H100", 81920))
    n = NodeState("a", "a", slots, 8, 100_000, 100_000)
    plan = place(Snapshot((n,), (job("x", gpus=1), job("y", gpus=1, at=1))), 0.0)
    assert [(g.job_id, g.replicas[0].gpus) for g in plan.placements] == [("x", (1,))]


@settings(max_examples=200, deadline=None)
@given(
    nodes=st.lists(st.tuples(st.integers(0, 8), st.integers(1, 16)), min_size=0, max_size=6),
    jobs=st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 8), st.integers(0, 3)), min_size=0, max_size=12
    ),
)
def test_no_node_is_ever_overcommitted_and_gangs_are_whole(
    nodes: list[tuple[int, int]], jobs: list[tuple[int, int, int]]
) -> None:
    ns = tuple(node(f"n{i}", g, cpus=c) for i, (g, c) in enumerate(nodes))
    js = tuple(job(f"j{i}", r, g, at=i, prio=p) for i, (r, g, p) in enumerate(jobs))
    plan = place(Snapshot(ns, js), 0.0)
    used_gpus: dict[str, list[int]] = {}
    used_cpus: dict[str, float] = {}
    by_id = {j.id: j for j in js}
    for gang in plan.placements:
        assert len(gang.replicas) == by_id[gang.job_id].replicas  # all or nothing
        for r in gang.replicas:
            assert len(r.gpus) == by_id[gang.job_id].demand.gpus
            used_gpus.setdefault(r.node_id, []).extend(r.gpus)
            used_cpus[r.node_id] = used_cpus.get(r.node_id, 0) + 1
    capacity = {n.id: n for n in ns}
    for node_id, gpus in used_gpus.items():
        assert len(gpus) == len(set(gpus))  # no GPU twice
        assert set(gpus) <= {g.index for g in capacity[node_id].gpus}
        assert used_cpus[node_id] <= capacity[node_id].cpus
    placed = {g.job_id for g in plan.placements}
    assert placed | set(plan.pending_reasons) == set(by_id)
