"""Recovery rules and goodput accounting, rule by rule."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.core.goodput import AttemptRecord, goodput
from corral.core.recovery import (
    AttemptState,
    Cause,
    JobRecoverySpec,
    NodeView,
    RecoveryMemory,
    RecoveryPolicy,
    ReplicaPhase,
    ReplicaView,
    Signal,
    Verdict,
    decide,
    plan_next_attempt,
    young_interval_s,
)
from corral.core.states import NodeCondition

T0 = 1000.0
POLICY = RecoveryPolicy(attribution_window_s=5.0, exclude_s=3600.0)
RUN = ReplicaPhase.RUNNING


def attempt(
    *phases: ReplicaPhase,
    spec: JobRecoverySpec | None = None,
    heard: float = T0,
    spare: int = 1,
    **extra: object,
) -> AttemptState:
    """A gang of len(phases) replicas on n0, n1, ...; `spare` more ready nodes; all heard.
    `counts`, `excluded` and `hang_streak` in `extra` go to its recovery memory."""
    replicas = tuple(ReplicaView(rank=i, node=f"n{i}", phase=p) for i, p in enumerate(phases))
    names = [f"n{i}" for i in range(len(phases) + spare)]
    state = AttemptState(
        attempt=1,
        started_at=T0,
        spec=spec or JobRecoverySpec(replicas=len(phases), max_restarts=2),
        replicas=replicas,
        nodes={n: NodeView(NodeCondition.READY, heard) for n in names},
        slots={n: 1 for n in names},
    )
    memory = {k: extra.pop(k) for k in ("counts", "excluded", "hang_streak") if k in extra}
    return with_memory(replace(state, **extra), **memory)  # type: ignore[arg-type]


def with_memory(state: AttemptState, **changes: object) -> AttemptState:
    return replace(state, memory=replace(state.memory, **changes))  # type: ignore[arg-type]


def with_replica(state: AttemptState, rank: int, **changes: object) -> AttemptState:
    replicas = tuple(
        replace(r, **changes) if r.rank == rank else r  # type: ignore[arg-type]
        for r in state.replicas
    )
    return replace(state, replicas=replicas)


def with_node(state: AttemptState, name: str, **changes: object) -> AttemptState:
    nodes = dict(state.nodes)
    nodes[name] = replace(nodes[name], **changes)  # type: ignore[arg-type]
    return replace(state, nodes=nodes)


def failed(state: AttemptState, rank: int, code: int | None, at: float) -> AttemptState:
    return with_replica(state, rank, phase=ReplicaPhase.FAILED, exit_code=code, finished_at=at)


# -- classification ---------------------------------------------------------------------


def test_a_healthy_attempt_continues() -> None:
    d = decide(attempt(RUN, RUN), T0 + 100, POLICY)
    assert d.verdict is Verdict.CONTINUE and not d.stop_replicas and d.cause is None


def test_a_lost_node_restarts_on_the_spare_and_excludes_the_node() -> None:
    state = with_node(attempt(RUN, RUN), "n1", condition=NodeCondition.LOST)
    state = with_replica(state, 1, phase=ReplicaPhase.LOST, finished_at=T0 + 50)
    d = decide(state, T0 + 60, POLICY)
    assert (d.verdict, d.cause, d.replicas, d.stop_replicas) == (
        Verdict.RESTART,
        Cause.NODE_LOST,
        2,
        True,
    )
    assert d.memory.excluded == {"n1": T0 + 60 + 3600}
    assert d.cordon == frozenset()
    assert d.memory.counts == {Cause.NODE_LOST: 1}
    assert "node n1 lost" in d.reason and "not charged to max_restarts" in d.reason


def test_a_survivors_exit_is_not_blamed_on_the_script_while_its_peer_is_silent() -> None:
    # n1 died at T0+50 (no heartbeat since); the survivor on n0 exited 1 at once.
    state = failed(attempt(RUN, RUN, heard=T0 + 49), 0, 1, T0 + 50.1)
    state = with_node(state, "n0", last_heard_at=T0 + 50.1)  # its exit report
    held = decide(state, T0 + 51, POLICY)
    assert held.verdict is Verdict.HOLD and held.stop_replicas
    assert held.memory.counts == {} and held.recheck_at == pytest.approx(T0 + 55.1)
    still = decide(state, T0 + 56, POLICY)
    assert still.verdict is Verdict.HOLD and "not heard from n1" in still.reason
    assert still.recheck_at == T0 + 57
    lost = with_node(state, "n1", condition=NodeCondition.LOST)
    d = decide(lost, T0 + 60, POLICY)
    assert (d.verdict, d.cause) == (Verdict.RESTART, Cause.NODE_LOST)
    assert Cause.USER_ERROR not in d.memory.counts and set(d.memory.excluded) == {"n1"}


def test_a_non_zero_exit_with_every_node_heard_is_a_user_error() -> None:
    state = failed(attempt(RUN, RUN, heard=T0 + 52), 1, 3, T0 + 50)
    assert decide(state, T0 + 54, POLICY).verdict is Verdict.HOLD  # inside the window
    d = decide(state, T0 + 55, POLICY)
    assert (d.verdict, d.cause, d.replicas) == (Verdict.RESTART, Cause.USER_ERROR, 2)
    assert "replica 1 exited with code 3" in d.reason and "restart 1 of 2" in d.reason
    assert d.memory.excluded == {}, "a script's error says nothing about the node"


def test_user_errors_give_up_after_max_restarts() -> None:
    spec = JobRecoverySpec(replicas=2, max_restarts=2)
    state = failed(attempt(RUN, RUN, spec=spec, heard=T0 + 60), 0, 1, T0 + 50)
    state = with_memory(state, counts={Cause.USER_ERROR: 2, Cause.NODE_LOST: 5})
    d = decide(state, T0 + 60, POLICY)
    assert (d.verdict, d.cause, d.stop_replicas) == (Verdict.GIVE_UP, Cause.USER_ERROR, True)
    assert "no restarts left (max_restarts: 2)" in d.reason
    assert d.memory.counts == {Cause.USER_ERROR: 3, Cause.NODE_LOST: 5}


def test_max_restarts_zero_fails_on_the_first_user_error() -> None:
    spec = JobRecoverySpec(replicas=1, max_restarts=0)
    state = failed(attempt(RUN, spec=spec, heard=T0 + 60), 0, 2, T0 + 50)
    assert decide(state, T0 + 60, POLICY).verdict is Verdict.GIVE_UP


def test_infrastructure_failures_do_not_spend_max_restarts_but_have_their_own_cap() -> None:
    spec = JobRecoverySpec(replicas=2, max_restarts=0)
    state = with_node(attempt(RUN, RUN, spec=spec), "n1", condition=NodeCondition.LOST)
    ok = decide(
        with_memory(state, counts={Cause.NODE_LOST: 9}),
        T0 + 5,
        replace(POLICY, max_infra_restarts=10),
    )
    assert ok.verdict is Verdict.RESTART
    capped = decide(
        with_memory(state, counts={Cause.NODE_LOST: 6, Cause.GPU_XID: 4}),
        T0 + 5,
        replace(POLICY, max_infra_restarts=10),
    )
    assert capped.verdict is Verdict.GIVE_UP and "cap 10" in capped.reason


def test_an_unknown_exit_status_is_infrastructure() -> None:
    state = failed(attempt(RUN, RUN, heard=T0 + 60), 1, None, T0 + 50)
    d = decide(state, T0 + 50.5, POLICY)  # no attribution wait: nothing to blame on the script
    assert (d.verdict, d.cause, set(d.memory.excluded)) == (
        Verdict.RESTART,
        Cause.EXIT_UNKNOWN,
        {"n1"},
    )


def test_a_port_held_by_another_process_is_infrastructure_and_excludes_no_node() -> None:
    # Rank 0 could not listen on its MASTER_PORT (the agent found it taken, exit status none
    # or 1); rank 1 then failed to reach it and exited 1 within the attribution window.
    spec = JobRecoverySpec(replicas=2, max_restarts=0)
    for code in (None, 1):
        state = failed(attempt(RUN, RUN, spec=spec, heard=T0 + 60), 0, code, T0 + 50)
        state = with_replica(state, 0, cause=Cause.PORT_IN_USE)
        state = failed(state, 1, 1, T0 + 50.2)
        d = decide(state, T0 + 50.5, POLICY)
        assert (d.verdict, d.cause, d.replicas) == (Verdict.RESTART, Cause.PORT_IN_USE, 2)
        assert d.memory.excluded == {} and d.cordon == frozenset(), (
            "the port, not the node, was bad"
        )
        assert d.memory.counts == {Cause.PORT_IN_USE: 1} and Cause.PORT_IN_USE.infrastructure
        assert "found its port held by another process" in d.reason
        assert "not charged to max_restarts" in d.reason


def test_a_port_in_use_on_one_replica_does_not_hide_a_lost_node() -> None:
    state = failed(attempt(RUN, RUN, heard=T0 + 60), 0, None, T0 + 50)
    state = with_replica(state, 0, cause=Cause.PORT_IN_USE)
    state = with_node(state, "n1", condition=NodeCondition.LOST)
    d = decide(state, T0 + 51, POLICY)
    assert d.cause is Cause.NODE_LOST and set(d.memory.excluded) == {"n1"}


def test_a_gpu_xid_cordons_its_node_and_outranks_the_exits_it_causes() -> None:
    state = failed(attempt(RUN, RUN), 0, 1, T0 + 30)
    state = replace(state, signals=(Signal(Cause.GPU_XID, T0 + 31, "n0", "Xid 79 on GPU 3"),))
    d = decide(state, T0 + 32, POLICY)
    assert (d.verdict, d.cause, d.cordon) == (Verdict.RESTART, Cause.GPU_XID, frozenset({"n0"}))
    assert "Xid 79 on GPU 3" in d.reason
    assert "cordoned n0 (suspect hardware)" in d.reason, "the user reads why the node left"


def test_signals_of_earlier_attempts_and_other_nodes_are_ignored() -> None:
    old = Signal(Cause.GPU_XID, T0 - 1, "n0")
    elsewhere = Signal(Cause.GPU_XID, T0 + 1, "n9")
    state = replace(attempt(RUN, RUN), signals=(old, elsewhere))
    assert decide(state, T0 + 10, POLICY).verdict is Verdict.CONTINUE


def test_a_node_lost_outranks_an_xid_and_both_nodes_are_excluded() -> None:
    state = with_node(attempt(RUN, RUN, spare=2), "n1", condition=NodeCondition.LOST)
    state = replace(state, signals=(Signal(Cause.GPU_XID, T0 + 1, "n0"),))
    d = decide(state, T0 + 10, POLICY)
    assert d.cause is Cause.NODE_LOST and set(d.memory.excluded) == {"n0", "n1"}
    assert d.cordon == frozenset({"n0"}), "the Xid's node, though the lost node is the cause"


def test_an_unhealthy_node_ends_the_attempt() -> None:
    state = with_node(attempt(RUN, RUN), "n0", condition=NodeCondition.UNHEALTHY)
    d = decide(state, T0 + 10, POLICY)
    assert (d.cause, d.cordon) == (Cause.NODE_UNHEALTHY, frozenset({"n0"}))


def test_a_collective_timeout_without_a_node_excludes_nobody() -> None:
    state = replace(attempt(RUN, RUN), signals=(Signal(Cause.COLLECTIVE_TIMEOUT, T0 + 9),))
    d = decide(state, T0 + 10, POLICY)
    assert (d.verdict, d.cause, d.memory.excluded) == (
        Verdict.RESTART,
        Cause.COLLECTIVE_TIMEOUT,
        {},
    )


def test_a_signal_must_be_infrastructure() -> None:
    with pytest.raises(ValueError, match="infrastructure"):
        Signal(Cause.USER_ERROR, T0)


# -- hangs ----------------------------------------------------------------------------


def hang_spec() -> JobRecoverySpec:
    return JobRecoverySpec(replicas=2, max_restarts=0, progress_timeout_s=60.0)


def test_a_healthy_attempt_is_looked_at_again_when_it_would_hang() -> None:
    state = attempt(RUN, RUN, spec=hang_spec())
    state = with_replica(with_replica(state, 0, progress_at=T0 + 20), 1, progress_at=T0 + 30)
    d = decide(state, T0 + 40, POLICY)
    assert (d.verdict, d.recheck_at) == (Verdict.CONTINUE, T0 + 80), "the slowest rank's"
    assert decide(attempt(RUN, RUN), T0 + 40, POLICY).recheck_at is None, "no timeout"


def test_no_progress_for_the_timeout_is_a_hang_of_the_whole_gang() -> None:
    state = attempt(RUN, RUN, spec=hang_spec())
    state = with_replica(state, 0, step=10, progress_at=T0 + 100)
    state = with_replica(state, 1, step=10, progress_at=T0 + 101)
    assert decide(state, T0 + 159, POLICY).verdict is Verdict.CONTINUE
    d = decide(state, T0 + 160, POLICY)
    assert (d.verdict, d.cause, d.memory.excluded) == (Verdict.RESTART, Cause.HANG, {})
    assert "no new step for 60s" in d.reason


def test_a_hang_before_the_first_step_counts_from_the_attempt_start() -> None:
    state = attempt(RUN, RUN, spec=hang_spec())
    assert decide(state, T0 + 59, POLICY).verdict is Verdict.CONTINUE
    assert decide(state, T0 + 60, POLICY).cause is Cause.HANG


def test_a_replica_stalled_while_the_others_advance_has_its_node_excluded() -> None:
    state = attempt(RUN, RUN, spec=hang_spec())
    state = with_replica(state, 0, step=50, progress_at=T0 + 200)
    state = with_replica(state, 1, step=20, progress_at=T0 + 100)
    d = decide(state, T0 + 201, POLICY)
    assert d.cause is Cause.HANG and set(d.memory.excluded) == {"n1"}
    # Stalled at the same step as the rest (lockstep) is no evidence against the node.
    level = with_replica(state, 0, step=20)
    assert decide(level, T0 + 201, POLICY).memory.excluded == {}


def test_repeated_hangs_without_progress_give_up_as_a_likely_deadlock() -> None:
    policy = replace(POLICY, max_hang_streak=3)
    state = attempt(RUN, RUN, spec=hang_spec(), start_step=40, hang_streak=1)
    state = with_replica(state, 0, step=40, progress_at=T0 + 5)
    first = decide(state, T0 + 100, policy)
    assert (first.verdict, first.memory.hang_streak) == (Verdict.RESTART, 2)
    again = decide(with_memory(state, hang_streak=first.memory.hang_streak), T0 + 100, policy)
    assert again.verdict is Verdict.GIVE_UP and "deadlock" in again.reason


def test_a_hang_after_new_steps_resets_the_streak() -> None:
    state = attempt(RUN, RUN, spec=hang_spec(), start_step=40, hang_streak=2)
    state = with_replica(state, 0, step=41, progress_at=T0 + 5)
    d = decide(state, T0 + 100, POLICY)
    assert (d.verdict, d.memory.hang_streak) == (Verdict.RESTART, 0)


# -- capacity, exclusion and elastic sizing ---------------------------------------------


def test_without_a_spare_the_next_attempt_waits_for_capacity() -> None:
    state = with_node(attempt(RUN, RUN, spare=0), "n1", condition=NodeCondition.LOST)
    d = decide(state, T0 + 10, POLICY)
    assert (d.verdict, d.replicas, d.stop_replicas) == (Verdict.WAIT, 2, True)
    assert "waiting for capacity: 1 of 2 replicas fit" in d.reason


def test_expired_exclusions_are_dropped_and_live_ones_kept() -> None:
    state = attempt(RUN, RUN, excluded={"old": T0 - 1, "live": T0 + 500})
    assert decide(state, T0, POLICY).memory.excluded == {"live": T0 + 500}


def test_an_elastic_job_waits_for_a_replacement_then_shrinks() -> None:
    spec = JobRecoverySpec(replicas=4, max_restarts=0, min_replicas=2)
    state = with_node(
        attempt(RUN, RUN, RUN, RUN, spec=spec, spare=0), "n3", condition=NodeCondition.LOST
    )
    policy = replace(POLICY, replacement_wait_s=120.0)
    d = decide(state, T0 + 10, policy)
    assert (d.verdict, d.replicas, d.recheck_at) == (Verdict.WAIT, 4, T0 + 130)
    assert "then shrinking to 3" in d.reason
    later = plan_next_attempt(
        spec, state.slots, state.nodes, d.memory.excluded, T0 + 10, T0 + 130, policy
    )
    assert (later.verdict, later.replicas) == (Verdict.RESTART, 3)
    assert "shrinking to 3 (min_replicas: 2)" in later.reason


def test_an_elastic_job_below_its_minimum_waits() -> None:
    spec = JobRecoverySpec(replicas=4, min_replicas=3)
    slots = {"a": 1, "b": 1}
    nodes = {"a": NodeView(), "b": NodeView()}
    nxt = plan_next_attempt(spec, slots, nodes, {}, T0, T0 + 1e6, POLICY)
    assert (nxt.verdict, nxt.replicas) == (Verdict.WAIT, 4)


def test_capacity_counts_slots_on_ready_nodes_that_are_not_excluded() -> None:
    spec = JobRecoverySpec(replicas=3)
    slots = {"a": 2, "b": 1, "c": 5, "d": 5}
    nodes = {
        "a": NodeView(),
        "b": NodeView(),
        "c": NodeView(NodeCondition.CORDONED),
        "d": NodeView(),
    }
    nxt = plan_next_attempt(spec, slots, nodes, {"d": T0 + 10}, T0, T0, POLICY)
    assert (nxt.verdict, nxt.replicas) == (Verdict.RESTART, 3)
    nxt = plan_next_attempt(spec, {"a": 2}, nodes, {}, T0, T0, POLICY)
    assert nxt.verdict is Verdict.WAIT


# -- Young's rule -----------------------------------------------------------------------


def test_young_interval() -> None:
    assert young_interval_s(60.0, 3 * 3600.0) == pytest.approx(math.sqrt(2 * 60 * 10800))
    with pytest.raises(ValueError):
        young_interval_s(0.0, 100.0)


# -- goodput ----------------------------------------------------------------------------


def test_goodput_of_one_clean_attempt() -> None:
    g = goodput([AttemptRecord(started_at=0, ended_at=1000, first_step_at=100, step=900)], 1000)
    assert (g.wall_s, g.productive_s, g.startup_s, g.lost_by_cause) == (1000, 900, 100, {})
    assert g.ettr == 0.9


def test_goodput_charges_a_failure_with_the_work_since_its_checkpoint_and_the_restart() -> None:
    attempts = [
        AttemptRecord(
            started_at=0,
            ended_at=1000,
            end_cause=Cause.NODE_LOST,
            first_step_at=50,
            step=950,
            checkpoint_step=700,
            checkpoint_at=750,
            checkpoint_overhead_s=20,
        ),
        AttemptRecord(started_at=1040, ended_at=2000, start_step=700, first_step_at=1100),
    ]
    g = goodput(attempts, 2000)
    # lost: 250 s after the checkpoint, 40 s to restart, 60 s of start-up.
    assert g.lost_by_cause == {Cause.NODE_LOST: 350}
    assert (g.startup_s, g.checkpointing_s, g.productive_s) == (50, 20, 680 + 900)
    assert g.ettr == pytest.approx(1580 / 2000)


def test_an_attempt_that_never_checkpointed_loses_all_its_work() -> None:
    a = AttemptRecord(
        started_at=0,
        ended_at=500,
        end_cause=Cause.USER_ERROR,
        start_step=100,
        checkpoint_step=100,  # the one it resumed from: nothing new
        checkpoint_at=10,
    )
    g = goodput([a], 600)
    assert g.productive_s == 0 and g.lost_by_cause == {Cause.USER_ERROR: 600}


def test_goodput_of_nothing_is_zero() -> None:
    assert goodput([], 10).ettr == 0.0


causes = st.sampled_from([*Cause, None])


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[AttemptRecord], float]:
    t = draw(st.floats(0, 1e4))
    runs: list[AttemptRecord] = []
    for _ in range(draw(st.integers(1, 6))):
        start = t + draw(st.floats(0, 1e3))
        length = draw(st.floats(0, 1e4))
        first = start + draw(st.floats(0, 2e3))
        ckpt_at = start + draw(st.floats(0, 1.2e4))
        runs.append(
            AttemptRecord(
                started_at=start,
                ended_at=start + length,
                end_cause=draw(causes),
                start_step=draw(st.integers(0, 5)),
                first_step_at=first if draw(st.booleans()) else None,
                checkpoint_step=draw(st.one_of(st.none(), st.integers(0, 10))),
                checkpoint_at=ckpt_at if draw(st.booleans()) else None,
                checkpoint_overhead_s=draw(st.floats(0, 100)),
            )
        )
        t = start + length
    return runs, t + draw(st.floats(0, 1e3))


@given(histories())
def test_goodput_partitions_wall_time(history: tuple[list[AttemptRecord], float]) -> None:
    runs, end = history
    g = goodput(runs, end)
    total = g.productive_s + g.checkpointing_s + g.startup_s + g.other_s
    total += sum(g.lost_by_cause.values())
    assert total == pytest.approx(g.wall_s, abs=1e-6 * max(1.0, g.wall_s))
    assert 0.0 <= g.ettr <= 1.0 + 1e-9
    assert all(v >= 0 for v in g.lost_by_cause.values())


# -- the memory kept across attempts ----------------------------------------------------


def test_the_recovery_memory_survives_its_json_column() -> None:
    memory = RecoveryMemory({Cause.GPU_XID: 2, Cause.USER_ERROR: 1}, {"n1": T0 + 5.5}, 2)
    assert RecoveryMemory.from_json(memory.to_json()) == memory
    assert RecoveryMemory.from_json({}) == RecoveryMemory() == RecoveryMemory.from_json(None)


def test_a_cause_this_version_does_not_know_is_dropped_not_fatal() -> None:
    raw = {"counts": {"gpu_xid": 1, "cosmic_ray": 4}, "excluded": {}, "hang_streak": 0}
    assert RecoveryMemory.from_json(raw).counts == {Cause.GPU_XID: 1}


def test_exclusions_expire() -> None:
    memory = RecoveryMemory(excluded={"old": T0, "live": T0 + 1})
    assert memory.excluded_at(T0) == {"live": T0 + 1}
