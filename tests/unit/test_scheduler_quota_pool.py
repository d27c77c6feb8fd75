"""The unguaranteed pool: GPUs nobody is guaranteed serve anyone's non-preemptible work,
and never at the cost of a guarantee (issue 10 item 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from test_scheduler_helpers import A100, H100, job, node, running, victims, where, world

from corral.core.placement import Outcome, PendingJob, PlacementPlan, RunningJob, place
from corral.core.scheduler.pool import MAX_ATOMS, Pool

TEAM_A = {"team-a": {"H100": 4}}


def _place(
    pending: Sequence[PendingJob],
    run: Sequence[RunningJob] = (),
    quotas: Mapping[str, Mapping[str, int]] = TEAM_A,
    nodes: Sequence[str] = ("H100",),
) -> PlacementPlan:
    fleet = [node(f"n{i}", model=A100 if m == "A100" else H100) for i, m in enumerate(nodes)]
    return place(world(fleet, pending, run, quotas), 0.0)


def _firm(name: str, on: str, gpus: range, ws: str) -> RunningJob:
    return running(name, [(on, gpus)], ws=ws, preemptible=False)


def test_the_issue_a_quota_on_team_a_leaves_the_default_workspace_its_gpus() -> None:
    # `corral quota set team-a --gpus H100:4` on an 8-GPU fleet; `default` has no quota.
    plan = _place([job("chat", 1)])
    assert plan.outcome("chat") == Outcome.PLACED
    assert not plan.placements[0].borrowed  # in the pool: never preempted for a guarantee


@pytest.mark.parametrize(
    ("pending", "run", "quotas", "nodes", "placed"),
    [
        # The 4 unguaranteed GPUs, all of them, to a workspace without a quota.
        ([job("j", 4)], [], TEAM_A, ["H100"], {"j"}),
        # A workspace uses its own guarantee first, then the pool: 2 + the 6 nobody has.
        ([job("j", 8, ws="team-b")], [], {"team-b": {"H100": 2}}, ["H100"], {"j"}),
        # The pool is first come, by priority: the more urgent job gets the last 4.
        ([job("low", 4, at=0), job("high", 4, prio=10, at=5)], [], TEAM_A, ["H100"], {"high"}),
        # Owners first at equal priority: team-a's job within its guarantee, then default's
        # in the pool, and both fit.
        ([job("d", 4, at=0), job("a", 4, ws="team-a", at=5)], [], TEAM_A, ["H100"], {"d", "a"}),
        # All guaranteed: nothing for default.
        ([job("j", 1)], [], {"team-a": {"H100": 8}}, ["H100"], set()),
        # Zero guarantees leave everything unguaranteed.
        ([job("j", 8)], [], {"team-a": {"H100": 0}}, ["H100"], {"j"}),
        # A guarantee on a model the fleet does not have closes nothing.
        ([job("j", 8)], [], {"team-a": {"B200": 8}}, ["H100"], {"j"}),
        # A guarantee larger than the ready fleet's H100 does not close the A100 pool...
        ([job("j", 8, gpu_type="A100")], [], {"team-a": {"H100": 16}}, ["H100", "A100"], {"j"}),
        # ... but no H100 is unguaranteed.
        ([job("j", 1, gpu_type="H100")], [], {"team-a": {"H100": 16}}, ["H100", "A100"], set()),
        # "*" counts on every model: team-a's 8 and team-b's 8 H100 take both nodes, so an
        # A100 is not free just because no quota names it.
        (
            [job("j", 1, gpu_type="A100")],
            [],
            {"team-a": {"*": 8}, "team-b": {"H100": 8}},
            ["H100", "A100"],
            set(),
        ),
        # With team-a's "*" at 4, 4 GPUs are unguaranteed, and they can only be A100s.
        (
            [job("j", 4, gpu_type="A100")],
            [],
            {"team-a": {"*": 4}, "team-b": {"H100": 8}},
            ["H100", "A100"],
            {"j"},
        ),
        (
            [job("j", 1, gpu_type="H100")],
            [],
            {"team-a": {"*": 4}, "team-b": {"H100": 8}},
            ["H100", "A100"],
            set(),
        ),
        # Another workspace's non-preemptible work already fills the pool.
        ([job("j", 1)], [_firm("d", "n0", range(4), "team-z")], TEAM_A, ["H100"], set()),
        # ... while the owner still gets its whole guarantee beside it.
        (
            [job("a", 4, ws="team-a")],
            [_firm("d", "n0", range(4), "team-z")],
            TEAM_A,
            ["H100"],
            {"a"},
        ),
        # A workspace's own non-preemptible work within its guarantee is not pool use.
        (
            [job("j", 4, ws="team-b")],
            [_firm("own", "n0", range(2), "team-b")],
            {"team-a": {"H100": 4}, "team-b": {"H100": 2}},
            ["H100"],
            set(),  # its guarantee is full, and the pool has 2 of the 4 it needs
        ),
        (
            [job("j", 2, ws="team-b")],
            [_firm("own", "n0", range(2), "team-b")],
            {"team-a": {"H100": 4}, "team-b": {"H100": 2}},
            ["H100"],
            {"j"},
        ),
    ],
)
def test_who_may_use_the_pool(
    pending: list[PendingJob],
    run: list[RunningJob],
    quotas: dict[str, dict[str, int]],
    nodes: list[str],
    placed: set[str],
) -> None:
    plan = _place(pending, run, quotas, nodes)
    assert set(where(plan)) == placed
    assert not any(g.borrowed for g in plan.placements)


def test_an_owner_reclaims_a_borrower_while_the_pool_is_in_use() -> None:
    # default runs 4 non-preemptible GPUs in the pool; team-c borrows the other 4. team-a's
    # guarantee is still whole: its job reclaims the borrower's GPUs.
    run = [
        _firm("pool", "n0", range(4), "default"),
        running("borrower", [("n0", range(4, 8))], ws="team-c"),
    ]
    plan = _place([job("owner", 4, ws="team-a")], run)
    assert where(plan) == {"owner": ["n0"]}
    assert victims(plan) == {"borrower"}


def test_a_pool_job_preempts_borrowers_by_priority_only() -> None:
    run = [running("borrower", [("n0", range(8))], ws="team-c")]
    same = _place([job("j", 4)], run)
    assert same.outcome("j") == Outcome.UNSCHEDULABLE and victims(same) == set()
    higher = _place([job("j", 4, prio=10)], run)
    assert higher.outcome("j") == Outcome.PLACED and victims(higher) == {"borrower"}


def test_a_preemptible_job_beyond_the_pool_still_borrows() -> None:
    plan = _place([job("j", 8, preemptible=True)])
    assert plan.outcome("j") == Outcome.PLACED
    assert plan.placements[0].borrowed


def test_the_pool_taken_reason_says_which_limit_binds() -> None:
    run = [_firm("d", "n0", range(4), "team-z")]
    plan = _place([job("j", 1, gpu_type="H100")], run)
    assert plan.pending_reasons["j"] == (
        "workspace default has no guarantee for H100 and the 4 unguaranteed H100 are held "
        "by non-preemptible jobs; this non-preemptible job needs 1: mark it preemptible to "
        "borrow idle GPUs"
    )
    assert plan.outcome("j") == Outcome.UNSCHEDULABLE


def test_the_pool_short_reason_counts_the_guarantee_and_the_pool() -> None:
    quotas = {"team-a": {"H100": 4}, "team-b": {"H100": 2}}
    run = [_firm("own", "n0", range(2), "team-b"), _firm("z", "n0", range(2, 3), "team-z")]
    plan = _place([job("j", 2, ws="team-b", gpu_type="H100")], run, quotas)
    assert plan.pending_reasons["j"] == (
        "workspace team-b holds 2 of its 2 guaranteed H100 with non-preemptible jobs and "
        "only 1 of the 2 unguaranteed H100 are free of non-preemptible jobs; this "
        "non-preemptible job needs 2: mark it preemptible to borrow idle GPUs"
    )


def test_a_job_bigger_than_its_guarantee_and_the_whole_pool_never_fits() -> None:
    quotas = {**TEAM_A, "team-b": {"H100": 2}}  # 2 H100 are nobody's
    plan = _place([job("j", 8, gpu_type="H100", ws="team-b")], quotas=quotas)
    assert plan.outcome("j") == Outcome.UNRESOLVABLE
    assert plan.pending_reasons["j"] == (
        "workspace team-b is guaranteed 2 H100 and the ready fleet leaves 2 H100 "
        "unguaranteed; this non-preemptible job needs 8: mark it preemptible to borrow "
        "idle GPUs"
    )
    fits = _place([job("j", 4, gpu_type="H100", ws="team-b")], quotas=quotas)
    assert fits.outcome("j") == Outcome.PLACED


def test_the_pool_shrinks_with_the_ready_fleet_and_guarantees_stay() -> None:
    quotas = {"team-a": {"H100": 8}}
    assert _place([job("j", 8)], quotas=quotas, nodes=["H100", "H100"]).outcome("j") == (
        Outcome.PLACED
    )
    # One node gone: its 8 GPUs came out of the pool, not out of team-a's guarantee.
    one = _place([job("j", 1), job("a", 8, ws="team-a")], quotas=quotas, nodes=["H100"])
    assert one.outcome("j") == Outcome.UNRESOLVABLE and one.outcome("a") == Outcome.PLACED


def test_a_fleet_of_too_many_atoms_gets_no_pool_but_keeps_its_guarantees() -> None:
    capacity = {a: 8 for a in range(MAX_ATOMS + 1)}
    closed = Pool(capacity, {("t", "X"): (8, 1)})
    assert closed.fits(0, ("t", "X"), 8, 0)  # within the guarantee: never checked
    assert not closed.fits(1, None, 1, 1) and closed.unguaranteed(1) == 0
    small = Pool({0: 8, 1: 8}, {("t", "X"): (8, 1)})
    assert small.fits(1, None, 8, 8) and not small.fits(0, None, 1, 1)
    assert (small.unguaranteed(0), small.unguaranteed(1)) == (0, 8)
