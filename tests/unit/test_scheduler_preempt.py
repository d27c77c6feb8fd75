"""Preemption: minimal lower-priority victims, only preemptible ones, only if it helps."""

from __future__ import annotations

import pytest
from test_scheduler_helpers import job, node, running, victims, where, world

from corral.core.placement import Outcome, place
from corral.core.scheduler import Reclaim, SchedulerConfig

HIGH, LOW = 300, 0


def test_a_higher_priority_gang_preempts_a_lower_preemptible_one() -> None:
    low = running("low", [("a", range(8))], prio=LOW)
    plan = place(world([node("a")], [job("high", 8, prio=HIGH)], [low]), 0.0)
    assert where(plan) == {"high": ["a"]}
    (p,) = plan.preemptions
    assert (p.job_id, p.for_job_id) == ("low", "high")
    assert p.reason == "preempted for high (priority 300 > 0)"


@pytest.mark.parametrize(
    ("case", "victim_prio", "preemptible"),
    [
        ("non-preemptible", LOW, False),
        ("equal priority", HIGH, True),
        ("higher priority", HIGH + 1, True),
    ],
)
def test_never_preempts(case: str, victim_prio: int, preemptible: bool) -> None:
    other = running("other", [("a", range(8))], prio=victim_prio, preemptible=preemptible)
    plan = place(world([node("a")], [job("j", 8, prio=HIGH)], [other]), 0.0)
    assert plan.preemptions == (), case
    assert plan.outcome("j") == Outcome.UNSCHEDULABLE


def test_preemption_is_off_by_config() -> None:
    low = running("low", [("a", range(8))])
    plan = place(
        world([node("a")], [job("j", 8, prio=HIGH)], [low]), 0.0, SchedulerConfig(preemption=False)
    )
    assert plan.preemptions == ()


def test_fewest_gpus_lost() -> None:
    # Needs 2 GPUs; a 2-GPU job on one node and a 6-GPU job on another could each make room.
    run = [
        running("r6", [("a", range(6))]),
        running("keep-a", [("a", [6, 7])], preemptible=False),
        running("r2", [("b", [0, 1])]),
        running("keep-b", [("b", range(2, 8))], preemptible=False),
    ]
    plan = place(world([node("a"), node("b")], [job("j", 2, prio=HIGH)], run), 0.0)
    assert victims(plan) == {"r2"}


def test_a_victim_gang_costs_all_its_gpus() -> None:
    # Evicting the 2-node gang would free 8 on each node but lose 16 GPUs; the single
    # 8-GPU job on a third node is the cheaper victim.
    run = [
        running("gang", [("a", range(8)), ("b", range(8))]),
        running("single", [("c", range(8))]),
    ]
    plan = place(world([node("a"), node("b"), node("c")], [job("j", 8, prio=HIGH)], run), 0.0)
    assert victims(plan) == {"single"}
    assert where(plan) == {"j": ["c"]}


def test_the_newest_checkpoint_goes_first() -> None:
    run = [
        running("old-ckpt", [("a", range(8))], started=0, checkpoint=100),
        running("new-ckpt", [("b", range(8))], started=0, checkpoint=3500),
    ]
    plan = place(world([node("a"), node("b")], [job("j", 8, prio=HIGH)], run), 3600.0)
    assert victims(plan) == {"new-ckpt"}


def test_lowest_priority_goes_first() -> None:
    run = [
        running("batch", [("a", range(8))], prio=0),
        running("train", [("b", range(8))], prio=100),
    ]
    plan = place(world([node("a"), node("b")], [job("j", 8, prio=HIGH)], run), 0.0)
    assert victims(plan) == {"batch"}


def test_only_as_many_victims_as_needed() -> None:
    run = [running(f"r{i}", [("a", [i])]) for i in range(8)]
    plan = place(world([node("a")], [job("j", 3, prio=HIGH)], run), 0.0)
    assert len(plan.preemptions) == 3


def test_never_preempts_when_the_gang_would_still_not_fit() -> None:
    run = [
        running("firm", [("a", range(4))], preemptible=False),
        running("soft", [("a", range(4, 8))]),
    ]
    plan = place(world([node("a")], [job("j", 8, prio=HIGH)], run), 0.0)
    assert plan.preemptions == ()
    assert (
        "preempting all 1 lower-priority jobs in the way would still not make room"
        in (plan.pending_reasons["j"])
    )


def test_a_multi_node_gang_preempts_in_one_rack() -> None:
    run = [running(f"r{i}", [(f"n{i}", range(8))]) for i in range(4)]
    nodes = [node(f"n{i}", rack="ra" if i < 2 else "rb") for i in range(4)]
    plan = place(world(nodes, [job("g", 8, 2, prio=HIGH, topology="rack")], run), 0.0)
    assert len(plan.preemptions) == 2
    placed_on = set(where(plan)["g"])
    assert placed_on in ({"n0", "n1"}, {"n2", "n3"})
    assert victims(plan) == {f"r{n[1]}" for n in placed_on}


def test_freed_gpus_left_over_serve_later_jobs_in_the_round() -> None:
    run = [running("big", [("a", range(8))])]
    plan = place(world([node("a")], [job("j", 6, prio=HIGH), job("k", 2, at=1)], run), 0.0)
    assert sorted(where(plan)) == ["j", "k"]


# -- quotas and reclaim ----------------------------------------------------------------

QUOTAS = {"team-a": {"H100": 8}, "team-b": {"H100": 8}}


def test_a_guaranteed_job_is_not_taken_by_another_workspaces_priority() -> None:
    b = running("b-job", [("a", range(8))], ws="team-b", prio=LOW)
    plan = place(world([node("a")], [job("j", 8, ws="team-a", prio=HIGH)], [b], QUOTAS), 0.0)
    assert plan.preemptions == ()


def test_a_borrowed_job_is_taken_by_another_workspaces_priority() -> None:
    quotas = {"team-a": {"H100": 8}, "team-b": {"H100": 0}}
    b = running("b-job", [("a", range(8))], ws="team-b", prio=LOW)
    plan = place(world([node("a")], [job("j", 8, ws="team-a", prio=HIGH)], [b], quotas), 0.0)
    assert victims(plan) == {"b-job"}


def test_an_owner_reclaims_its_guarantee_at_equal_priority() -> None:
    quotas = {"team-a": {"H100": 8}, "team-b": {"H100": 0}}
    b = running("borrower", [("a", range(8))], ws="team-b", prio=100)
    plan = place(world([node("a")], [job("owner", 8, ws="team-a", prio=100)], [b], quotas), 0.0)
    (p,) = plan.preemptions
    assert p.job_id == "borrower"
    assert p.reason.startswith(
        "reclaimed for owner: it ran on GPUs borrowed beyond workspace team-b"
    )


@pytest.mark.parametrize(
    ("policy", "borrower_prio", "reclaimed"),
    [
        (Reclaim.LOWER_OR_EQUAL_PRIORITY, 100, True),
        (Reclaim.LOWER_OR_EQUAL_PRIORITY, 200, False),  # a higher-priority borrower stays
        (Reclaim.LOWER_PRIORITY, 100, False),
        (Reclaim.LOWER_PRIORITY, 50, True),
        (Reclaim.NEVER, 100, False),
    ],
)
def test_reclaim_policy(policy: Reclaim, borrower_prio: int, reclaimed: bool) -> None:
    quotas = {"team-a": {"H100": 8}, "team-b": {"H100": 0}}
    b = running("borrower", [("a", range(8))], ws="team-b", prio=borrower_prio)
    snap = world([node("a")], [job("owner", 8, ws="team-a", prio=100)], [b], quotas)
    plan = place(snap, 0.0, SchedulerConfig(reclaim=policy))
    assert (victims(plan) == {"borrower"}) is reclaimed


def test_no_reclaim_when_the_owner_would_itself_exceed_its_guarantee() -> None:
    quotas = {"team-a": {"H100": 8}, "team-b": {"H100": 0}}
    run = [
        running("a-own", [("a", range(8))], ws="team-a", preemptible=False, prio=100),
        running("borrower", [("b", range(8))], ws="team-b", prio=100),
    ]
    snap = world(
        [node("a"), node("b")],
        [job("more", 8, ws="team-a", prio=100, preemptible=True)],
        run,
        quotas,
    )
    plan = place(snap, 0.0)
    assert plan.preemptions == ()
