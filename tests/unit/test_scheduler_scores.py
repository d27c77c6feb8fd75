"""Scores: best fit keeps large holes whole; the fragmentation figure."""

from __future__ import annotations

import pytest
from test_scheduler_helpers import A100, H100, job, node, running, where, world

from corral.core.placement import place
from corral.core.scheduler import fragmentation, fragmentation_counts


def test_best_fit_takes_the_tightest_node() -> None:
    run = [
        running("r5", [("five", range(5))], preemptible=False),
        running("r2", [("two", range(2))], preemptible=False),
    ]
    nodes = [node("empty"), node("five"), node("two")]
    plan = place(world(nodes, [job("j", 3)], run), 0.0)
    assert where(plan) == {"j": ["five"]}  # 3 free there: left with 0


def test_small_jobs_pack_one_node_before_the_next() -> None:
    nodes = [node("a"), node("b")]
    plan = place(world(nodes, [job(f"j{i}", 1, at=i) for i in range(8)]), 0.0)
    assert {n for nodes_ in where(plan).values() for n in nodes_} == {"a"}


def test_ties_go_to_topology_order_so_whole_racks_stay_free() -> None:
    # Listed rack r2 first; r1 sorts first in topology order and is filled first.
    nodes = [node("x", rack="r2"), node("y", rack="r2"), node("a", rack="r1"), node("b", rack="r1")]
    plan = place(world(nodes, [job("j1", 1), job("j2", 8, at=1), job("big", 8, 2, at=2)]), 0.0)
    got = where(plan)
    assert got["j1"] == ["a"]
    assert got["j2"] == ["b"]
    assert sorted(got["big"]) == ["x", "y"]  # rack r2 kept whole for the gang


def test_a_job_that_did_not_ask_for_big_gpus_takes_the_smaller_ones() -> None:
    nodes = [node("h", model=H100), node("a", model=A100)]
    plan = place(world(nodes, [job("any", 8), job("needs-h", 8, gpu_type="H100", at=1)]), 0.0)
    assert where(plan) == {"any": ["a"], "needs-h": ["h"]}


def test_packing_leaves_an_eight_gpu_hole_where_first_fit_by_name_would_not() -> None:
    # Two nodes with 4 used each and one empty: four 1-GPU jobs go to the used nodes.
    run = [
        running("u1", [("n1", range(4))], preemptible=False),
        running("u2", [("n2", range(4))], preemptible=False),
    ]
    nodes = [node("n0"), node("n1"), node("n2")]
    plan = place(
        world(nodes, [job(f"s{i}", 1, at=i) for i in range(4)] + [job("big", 8, at=9)], run), 0.0
    )
    assert where(plan)["big"] == ["n0"]


@pytest.mark.parametrize(
    ("counts", "sizes", "expected"),
    [
        ([], None, 0.0),
        ([(0, 8), (0, 8)], None, 0.0),  # nothing free: nothing stranded
        ([(8, 8)], None, 0.0),  # a whole free node
        ([(4, 8)], None, 1.0),  # half a node: an 8-GPU job cannot use it
        ([(4, 8), (8, 8)], None, 4 / 12),
        ([(4, 4), (2, 4)], None, 2 / 6),  # NVL72-like 4-GPU nodes judged by their own size
        ([(3, 8), (2, 8)], {2: 1.0}, 0.0),  # 2-GPU jobs fit both
        ([(3, 8), (1, 8)], {2: 1.0}, 1 / 4),  # only the lone GPU is stranded
        ([(3, 8), (1, 8)], {2: 1.0, 4: 1.0}, (1 / 4 + 1.0) / 2),
        ([(5, 0)], None, 0.0),  # a node without healthy GPUs is ignored
    ],
)
def test_fragmentation_counts(
    counts: list[tuple[int, int]], sizes: dict[int, float] | None, expected: float
) -> None:
    assert fragmentation_counts(counts, sizes) == pytest.approx(expected)


def test_fragmentation_of_a_snapshot_counts_healthy_free_gpus() -> None:
    snap = world([node("a", unhealthy=[7]), node("b")], run=[running("r", [("a", [0, 1, 2])])])
    # a: 7 healthy, 3 used -> 4 free on a partly used node; b: 8 free on a whole node.
    assert fragmentation(snap.nodes) == pytest.approx(4 / 12)
