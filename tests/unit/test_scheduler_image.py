"""Image jobs: placed only on nodes whose agent reported a container runtime (one that passes
GPUs through when the job asks for GPUs); the pending reason says so; other jobs unaffected."""

from __future__ import annotations

from dataclasses import replace

from test_scheduler_helpers import job, node, running, victims, where, world

from corral.core.placement import NodeState, Outcome, PendingJob, place
from corral.core.scheduler import reasons
from corral.sim.fit import Frees, first_fit

IMAGE = "ghcr.io/x:1"


def with_runtime(n: NodeState, gpus: bool = False) -> NodeState:
    return replace(n, container_runtime=True, container_gpus=gpus)


def image_job(name: str, gpus: int = 0, **kw: object) -> PendingJob:
    return replace(job(name, gpus, **kw), image=IMAGE)  # type: ignore[arg-type]


def test_an_image_job_goes_only_to_the_node_with_a_runtime() -> None:
    # Best fit alone would pick a (fewest free GPUs): only c can run containers.
    nodes = [node("a", 2), node("b", 4), with_runtime(node("c", 8))]
    plan = place(world(nodes, [image_job("img"), job("plain")]), 0.0)
    assert where(plan) == {"img": ["c"], "plain": ["a"]}


def test_a_gang_of_image_replicas_spreads_only_over_runtime_nodes() -> None:
    nodes = [node("a"), with_runtime(node("b"), True), node("c"), with_runtime(node("d"), True)]
    plan = place(world(nodes, [image_job("g", 8, replicas=2, topology="zone")]), 0.0)
    assert sorted(where(plan)["g"]) == ["b", "d"]


def test_pending_reason_when_no_ready_node_has_a_runtime() -> None:
    nodes = [node("a"), node("b"), node("c")]
    plan = place(world(nodes, [image_job("img")]), 0.0)
    assert plan.outcome("img") == Outcome.UNRESOLVABLE
    assert plan.pending_reasons["img"] == (
        "image ghcr.io/x:1 needs a node with a container runtime (docker or podman); none of "
        "the 3 ready nodes has one (see `corral node get`)"
    )
    one = place(world([node("a")], [image_job("img")]), 0.0)
    assert "; the one ready node has none" in one.pending_reasons["img"]


def test_a_gpu_image_job_needs_a_runtime_that_passes_gpus_through() -> None:
    nodes = [with_runtime(node("a")), node("b")]
    plan = place(world(nodes, [image_job("img", 1), image_job("cpu")]), 0.0)
    assert where(plan) == {"cpu": ["a"]}
    assert plan.pending_reasons["img"].startswith(
        "image ghcr.io/x:1 needs a node with a container runtime (docker or podman) that "
        "passes GPUs through; none of the 2 ready nodes has one"
    )
    nodes = [with_runtime(node("a")), with_runtime(node("b"), gpus=True)]
    assert where(place(world(nodes, [image_job("img", 1)]), 0.0)) == {"img": ["b"]}


def test_the_reason_names_the_selector_it_looked_within() -> None:
    nodes = [node("a", labels={"pool": "x"}), node("b", labels={"pool": "x"}), node("c")]
    nodes[2] = with_runtime(nodes[2])
    plan = place(world(nodes, [image_job("img", selector={"pool": "x"})]), 0.0)
    assert (
        "none of the 2 ready nodes matching node_selector pool=x has one"
        in plan.pending_reasons["img"]
    )
    # A selector that matches nothing is still that, not a runtime problem.
    plan = place(world(nodes, [image_job("img", selector={"pool": "y"})]), 0.0)
    assert plan.pending_reasons["img"] == reasons.SELECTOR_MATCHES_NONE.format(selector="pool=y")


def test_no_ready_node_at_all_is_a_wait_not_a_runtime_problem() -> None:
    plan = place(world([], [image_job("img")]), 0.0)
    assert plan.outcome("img") == Outcome.UNSCHEDULABLE
    assert plan.pending_reasons["img"] == reasons.NO_NODES


def test_preemption_for_an_image_job_frees_a_runtime_node_only() -> None:
    nodes = [node("a", 8), with_runtime(node("b", 8), gpus=True)]
    low = [running("low-a", [("a", range(8))]), running("low-b", [("b", range(8))])]
    plan = place(world(nodes, [image_job("img", 8, prio=10)], low), 0.0)
    assert where(plan) == {"img": ["b"]}
    assert victims(plan) == {"low-b"}


def test_jobs_without_an_image_place_as_before() -> None:
    bare = [node("a", 2), node("b", 4), node("c", 8)]
    jobs = [job("one", 1), job("two", 4, replicas=2, topology="zone"), job("cpu")]
    before = place(world(bare, jobs), 0.0)
    after = place(world([with_runtime(n, gpus=True) for n in bare], jobs), 0.0)
    assert where(after) == where(before)
    assert after.pending_reasons == before.pending_reasons


def test_the_simulators_first_fit_keeps_image_jobs_off_nodes_without_a_runtime() -> None:
    nodes = (node("a"), with_runtime(node("b")), with_runtime(node("c"), gpus=True))
    frees = Frees(nodes)
    assert [r.node_id for r in first_fit(frees, image_job("cpu")) or ()] == ["b"]
    assert [r.node_id for r in first_fit(frees, image_job("gpu", 1)) or ()] == ["c"]
    assert [r.node_id for r in first_fit(frees, job("plain", 1)) or ()] == ["a"]
    assert first_fit(Frees((node("a"),)), image_job("none")) is None
