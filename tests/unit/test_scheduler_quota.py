"""Quotas: guarantees per workspace and model, borrowing, and fair share ordering."""

from __future__ import annotations

import pytest
from test_scheduler_helpers import A100, job, node, running, where, world

from corral.core.placement import Outcome, place
from corral.core.scheduler import SchedulerConfig

# Over the 16 GPUs of two nodes: every GPU is somebody's guarantee (no unguaranteed pool).
QUOTAS = {"team-a": {"H100": 8}, "team-b": {"H100": 16}}


def _one(pending, run=(), quotas=QUOTAS, nodes=None):  # type: ignore[no-untyped-def]
    plan = place(world(nodes or [node("a"), node("b")], [pending], list(run), quotas), 0.0)
    return plan, plan.outcome(pending.id), plan.pending_reasons.get(pending.id, "")


def test_without_quotas_nothing_is_checked_or_borrowed() -> None:
    plan, outcome, _ = _one(job("j", 8, 2, ws="anyone"), quotas={})
    assert outcome == Outcome.PLACED
    assert not plan.placements[0].borrowed


def test_within_the_guarantee_a_non_preemptible_job_runs() -> None:
    plan, outcome, _ = _one(job("j", 8, ws="team-a"))
    assert outcome == Outcome.PLACED
    assert not plan.placements[0].borrowed


def test_beyond_the_guarantee_a_non_preemptible_job_waits_with_the_reason() -> None:
    firm = running("firm", [("a", range(8))], ws="team-a", preemptible=False)
    _, outcome, reason = _one(job("j", 4, ws="team-a"), [firm])
    assert outcome == Outcome.UNSCHEDULABLE
    assert reason == (
        "workspace team-a holds 8 of its 8 guaranteed GPUs with non-preemptible jobs and "
        "guarantees cover all the ready fleet's GPUs; this non-preemptible job needs 4: "
        "mark it preemptible to borrow idle GPUs"
    )


def test_a_non_preemptible_job_bigger_than_the_guarantee_never_fits() -> None:
    _, outcome, reason = _one(job("j", 8, 2, ws="team-a"))
    assert outcome == Outcome.UNRESOLVABLE
    assert reason == (
        "workspace team-a is guaranteed 8 GPUs and the ready fleet leaves 0 GPUs "
        "unguaranteed; this non-preemptible job needs 16: mark it preemptible to borrow "
        "idle GPUs"
    )


def test_a_preemptible_job_borrows_idle_gpus_and_is_marked_reclaimable() -> None:
    plan, outcome, _ = _one(job("j", 8, 2, ws="team-a", preemptible=True))
    assert outcome == Outcome.PLACED
    assert plan.placements[0].borrowed


def test_own_preemptible_jobs_do_not_block_a_non_preemptible_one() -> None:
    # team-a's preemptible job holds its whole guarantee; the firm job still starts on
    # idle GPUs (the preemptible one becomes the borrower), and nothing is preempted.
    soft = running("soft", [("a", range(8))], ws="team-a", preemptible=True)
    plan, outcome, _ = _one(job("firm", 8, ws="team-a"), [soft])
    assert outcome == Outcome.PLACED
    assert plan.preemptions == ()


def test_a_workspace_without_a_quota_only_borrows() -> None:
    _, outcome, reason = _one(job("j", 1, ws="team-z"))
    assert outcome == Outcome.UNRESOLVABLE
    assert "guaranteed 0" in reason
    plan, outcome, _ = _one(job("j", 1, ws="team-z", preemptible=True))
    assert outcome == Outcome.PLACED
    assert plan.placements[0].borrowed


@pytest.mark.parametrize(
    ("quota", "outcome"),
    [
        ({"*": 8}, Outcome.PLACED),  # any model
        ({"a100": 8}, Outcome.PLACED),  # by model name, case-insensitive
        ({"H100": 8}, Outcome.UNRESOLVABLE),  # another model's guarantee does not count
        ({"A100": 0, "*": 8}, Outcome.UNRESOLVABLE),  # the named model wins over "*"
    ],
)
def test_quota_keys(quota: dict[str, int], outcome: Outcome) -> None:
    # "owner" is guaranteed the node's 8 A100: nothing is left unguaranteed for t.
    quotas = {"t": quota, "owner": {"A100": 8}}
    _, got, _ = _one(job("j", 8, ws="t"), quotas=quotas, nodes=[node("a", model=A100)])
    assert got == outcome


def test_fair_share_goes_to_the_workspace_holding_less() -> None:
    # team-a holds 8 GPUs already; team-b nothing. Equal priority, one free node:
    # team-b's job goes first though team-a's was submitted earlier.
    held = running("held", [("a", range(8))], ws="team-a", preemptible=False)
    pending = [job("a-job", 8, ws="team-a", at=0), job("b-job", 8, ws="team-b", at=5)]
    plan = place(world([node("a"), node("b")], pending, [held]), 0.0)
    assert list(where(plan)) == ["b-job"]
    plan = place(
        world([node("a"), node("b")], pending, [held]), 0.0, SchedulerConfig(fair_share=False)
    )
    assert list(where(plan)) == ["a-job"]


def test_priority_comes_before_fair_share() -> None:
    held = running("held", [("a", range(8))], ws="team-a", preemptible=False)
    pending = [job("a-job", 8, ws="team-a", prio=100), job("b-job", 8, ws="team-b")]
    plan = place(world([node("a"), node("b")], pending, [held]), 0.0)
    assert list(where(plan)) == ["a-job"]


def test_a_job_within_its_guarantee_goes_before_a_borrower() -> None:
    # team-b's borrower was submitted first, but team-a's job uses its own guarantee.
    quotas = {"team-a": {"H100": 8}}
    pending = [
        job("borrower", 8, ws="team-b", preemptible=True, at=0),
        job("owner", 8, ws="team-a", preemptible=True, at=5),
    ]
    plan = place(world([node("a")], pending, quotas=quotas), 0.0)
    assert list(where(plan)) == ["owner"]
