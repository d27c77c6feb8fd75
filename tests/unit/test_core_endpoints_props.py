"""Invariants of core/endpoints.reconcile on random endpoints (Hypothesis).

- ready capacity never drops below `min_replicas` (or what was ready, if less) because of
  a plan, but for the one replica a rollout by replacement takes down on purpose;
- a draining replica the gateways report busy is never stopped before `drain_timeout`;
- replicas never exceed `max_replicas` plus the surge (old ones kept while the new ones
  become ready, at most `max(desired, min_replicas)`);
- every action names a replica the endpoint has, and none is stopped twice;
- a restart (the autoscaler's state stored as JSON, read back) decides exactly as no
  restart, step after step.
"""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.core import autoscale
from corral.core.endpoints import (
    Drain,
    EndpointFacts,
    EndpointPolicy,
    Failure,
    Replace,
    ReplicaFacts,
    Start,
    Stop,
    Traffic,
    reconcile,
)
from corral.core.scheduler import reasons
from corral.core.states import EndpointReplicaState, JobState, ReplicaState

NOW = 10_000.0
NO_ROOM = reasons.NO_ROOM_CPU.format(replicas=1, demand="2 CPUs", level="node")
times = st.floats(min_value=NOW - 700, max_value=NOW, allow_nan=False)


@st.composite
def policies(draw: st.DrawFn) -> EndpointPolicy:
    low = draw(st.integers(0, 3))
    return EndpointPolicy(
        min_replicas=low,
        max_replicas=draw(st.integers(max(low, 1), 6)),
        target_in_flight=draw(st.sampled_from([0.5, 1.0, 4.0, 10.0])),
        idle_to_zero_s=draw(st.sampled_from([0.0, 30.0, 300.0])),
        readiness_timeout_s=draw(st.sampled_from([1.0, 60.0, 600.0])),
        drain_timeout_s=draw(st.sampled_from([0.0, 5.0, 30.0])),
    )


@st.composite
def replicas(draw: st.DrawFn, job_id: str, revision: int) -> ReplicaFacts:
    rev = draw(st.integers(max(1, revision - 2), revision))
    state = draw(
        st.sampled_from(
            [JobState.PENDING, JobState.STARTING, JobState.RUNNING, JobState.CANCELLING]
        )
    )
    submitted = draw(times)
    facts = ReplicaFacts(
        job_id=job_id,
        revision=rev,
        job_state=state,
        submitted_at=submitted,
        job_reason=draw(st.sampled_from([None, NO_ROOM, "waiting for a ready node"])),
        draining_at=draw(st.none() | times) if state != JobState.PENDING else None,
        frees_room=draw(st.booleans()),
    )
    if state == JobState.PENDING:
        return facts
    replica_state = draw(st.sampled_from([ReplicaState.ASSIGNED, ReplicaState.RUNNING]))
    running = replica_state == ReplicaState.RUNNING
    ready = draw(st.sampled_from([None, False, True])) if running else None
    return replace(
        facts,
        replica_id=f"r-{job_id}",
        replica_state=replica_state,
        ready=ready,
        ready_at=draw(st.none() | times) if not ready else draw(times),
        started_at=draw(st.none() | times) if running else None,
        replica_reason=draw(st.sampled_from([None, "GET /health answered 503"])),
    )


@st.composite
def traffic(draw: st.DrawFn, ids: list[str]) -> Traffic:
    counted = draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
    return Traffic(
        in_flight=draw(st.floats(0, 50, allow_nan=False)),
        arrivals=draw(st.integers(0, 100)),
        held=draw(st.integers(0, 5)),
        per_replica={i: draw(st.integers(0, 3)) for i in counted},
        known=draw(st.booleans()),
    )


@st.composite
def states(draw: st.DrawFn, policy: EndpointPolicy) -> autoscale.AutoscaleState | None:
    if draw(st.booleans()):
        return None
    state = autoscale.AutoscaleState.initial(
        policy.autoscaler(), NOW - 120, draw(st.integers(0, policy.max_replicas))
    )
    # A short history, so that panics, holds and recommendations are in the state.
    for step in range(draw(st.integers(0, 6))):
        at = NOW - 60 + 10 * step
        sample = autoscale.LoadSample(at, draw(st.floats(0, 40, allow_nan=False)), 1)
        ready = draw(st.integers(0, policy.max_replicas))
        state = autoscale.decide(policy.autoscaler(), state, at, ready, sample).state
    return state


@st.composite
def endpoints(draw: st.DrawFn) -> EndpointFacts:
    policy = draw(policies())
    revision = draw(st.integers(1, 3))
    count = draw(st.integers(0, 8))
    reps = tuple(draw(replicas(f"j{i}", revision)) for i in range(count))
    ids = [r.replica_id for r in reps if r.replica_id is not None]
    return EndpointFacts(
        name="emb",
        revision=revision,
        desired_replicas=draw(st.integers(policy.min_replicas, policy.max_replicas)),
        policy=policy,
        replicas=reps,
        failures=tuple(
            Failure(draw(times), draw(st.none() | st.integers(1, 3)))
            for _ in range(draw(st.integers(0, 4)))
        ),
        traffic=draw(traffic(ids)),
        autoscale=draw(states(policy)),
        deleting=draw(st.integers(0, 9)) == 0,
    )


def _acted_on(plan_actions: tuple[object, ...]) -> set[str]:
    return {a.job_id for a in plan_actions if isinstance(a, Drain | Stop | Replace)}


@settings(max_examples=400, deadline=None)
@given(endpoints())
def test_ready_capacity_never_drops_below_min_replicas(facts: EndpointFacts) -> None:
    if facts.deleting:
        return
    plan = reconcile(facts, NOW)
    ready = [r for r in facts.replicas if r.state == EndpointReplicaState.READY]
    kept = [r for r in ready if r.job_id not in _acted_on(plan.actions)]
    floor = min(len(ready), facts.policy.min_replicas)
    # By replacement, one ready old replica goes so that a new one has room (the rollout
    # would otherwise never finish); never more than one.
    allowance = 1 if plan.by_replacement else 0
    assert len(kept) >= floor - allowance, plan
    assert len(kept) >= min(len(ready), plan.desired) - allowance, plan


@settings(max_examples=400, deadline=None)
@given(endpoints())
def test_a_busy_draining_replica_is_stopped_only_at_the_drain_timeout(
    facts: EndpointFacts,
) -> None:
    plan = reconcile(facts, NOW)
    by_id = {r.job_id: r for r in facts.replicas}
    for action in plan.actions:
        if not isinstance(action, Stop):
            continue
        r = by_id[action.job_id]
        busy = r.replica_id is not None and facts.traffic.per_replica.get(r.replica_id, 0) > 0
        if r.draining_at is not None and busy:
            assert NOW - r.draining_at >= facts.policy.drain_timeout_s, action
        drained_now = any(isinstance(a, Drain) and a.job_id == r.job_id for a in plan.actions)
        if drained_now and busy:  # drained by this plan: only a zero timeout stops it at once
            assert facts.policy.drain_timeout_s <= 0, action


@settings(max_examples=400, deadline=None)
@given(endpoints())
def test_replicas_never_exceed_max_plus_the_surge(facts: EndpointFacts) -> None:
    plan = reconcile(facts, NOW)
    gone = _acted_on(plan.actions)
    kept = [r for r in facts.replicas if not r.stopping and r.job_id not in gone]
    starts = sum(1 for a in plan.actions if isinstance(a, Start))
    current = [r for r in kept if r.revision == facts.revision]
    old = [r for r in kept if r.revision != facts.revision]
    if facts.deleting:
        assert not kept and not starts
        return
    assert len(current) + starts <= max(plan.desired, len(current))
    assert plan.desired <= facts.policy.max_replicas
    surge = max(plan.desired, facts.policy.min_replicas)
    assert len(old) <= surge
    if starts:
        assert len(current) + starts <= facts.policy.max_replicas


@settings(max_examples=400, deadline=None)
@given(endpoints())
def test_every_action_names_a_replica_and_none_is_stopped_twice(facts: EndpointFacts) -> None:
    plan = reconcile(facts, NOW)
    ids = {r.job_id for r in facts.replicas}
    stopped = [a.job_id for a in plan.actions if isinstance(a, Stop | Replace)]
    drained = [a.job_id for a in plan.actions if isinstance(a, Drain)]
    assert set(stopped) <= ids and set(drained) <= ids
    assert len(stopped) == len(set(stopped))
    assert len(drained) == len(set(drained))
    assert all(a.reason for a in plan.actions)
    if plan.delete:
        assert facts.deleting and not facts.replicas


def _restarted(state: autoscale.AutoscaleState | None) -> autoscale.AutoscaleState | None:
    """What a fresh server reads back of the stored state."""
    if state is None:
        return None
    return autoscale.AutoscaleState.from_dict(json.loads(json.dumps(state.to_dict())))


@settings(max_examples=200, deadline=None)
@given(
    endpoints(),
    st.lists(
        st.tuples(
            st.floats(0.1, 30, allow_nan=False),
            st.floats(0, 50, allow_nan=False),
            st.integers(0, 20),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_a_restart_decides_the_same_as_no_restart(
    facts: EndpointFacts, steps: list[tuple[float, float, int, bool]]
) -> None:
    facts = replace(facts, deleting=False)
    kept = restarted = facts
    now = NOW
    for gap, in_flight, arrivals, known in steps:
        now += gap
        load = Traffic(in_flight=in_flight, arrivals=arrivals, known=known)
        plan = reconcile(replace(kept, traffic=load), now)
        again = reconcile(replace(restarted, traffic=load), now)
        assert again == plan
        kept = replace(kept, autoscale=plan.autoscale, desired_replicas=plan.desired)
        restarted = replace(
            restarted, autoscale=_restarted(again.autoscale), desired_replicas=again.desired
        )
