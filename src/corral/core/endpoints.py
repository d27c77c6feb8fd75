"""What an endpoint's replicas should do next. Pure: facts and `now` in, a plan out.

One pass, in this order (each step sees what the ones before it decided):

    autoscale   how many replicas now (core.autoscale, from the stored state + the load)
    replace     current-revision replicas that will not serve: stuck loading past the
                readiness timeout, or failing liveness after having served
    start       as many as are missing, unless replicas keep failing (crash backoff)
    scale down  fewer wanted: not-yet-ready ones stop first (no traffic lost), then the
                oldest ready ones drain
    roll out    old-revision replicas go as core.rollout says (surge, or by replacement)
    drain done  draining replicas stop once the gateways report them idle, or at
                `drain_timeout`, whichever is first
    reasons     the endpoint's headline and the notes the gateways may show (core.rollout)

An endpoint being deleted drains everything, and goes once no replica is left.

Every action carries a reason (for the log); the plan also carries the autoscaler's new
state, which the server stores with the endpoint so that a restarted server carries on
from the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.core import autoscale, rollout
from corral.core.states import (
    ACTIVE_REPLICA_STATES,
    EndpointReplicaState,
    JobState,
    ReplicaState,
)

# A replica that keeps failing is retried after 2^k seconds, at most this long; failures
# older than FAILURE_MEMORY_S are forgotten.
MAX_BACKOFF_S = 60.0
FAILURE_MEMORY_S = 600.0
# A draining replica the gateways report idle still gets this long: a gateway may not have
# taken the new route table yet.
DRAIN_QUIET_S = 0.5


# -- facts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointPolicy:
    """The spec's fields the decisions read."""

    min_replicas: int
    max_replicas: int
    target_in_flight: float
    idle_to_zero_s: float
    readiness_timeout_s: float
    drain_timeout_s: float
    readiness_path: str = "/health"

    def autoscaler(self) -> autoscale.AutoscalePolicy:
        return autoscale.AutoscalePolicy(
            target_in_flight=self.target_in_flight,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            scale_to_zero_after_s=self.idle_to_zero_s,
        )


@dataclass(frozen=True)
class ReplicaFacts:
    """One live replica job of the endpoint, and its current replica if it has one."""

    job_id: str
    revision: int
    job_state: JobState
    submitted_at: float
    job_reason: str | None = None  # the scheduler's, while pending
    draining_at: float | None = None
    replica_id: str | None = None
    replica_state: ReplicaState | None = None
    ready: bool | None = None  # None: not probed yet
    ready_at: float | None = None  # when it first passed readiness
    started_at: float | None = None
    replica_reason: str | None = None  # the readiness probe's words, while running
    frees_room: bool = False  # gone, its node has room for one current-revision replica
    # Why its node or GPU is out of service (health checks), None when it is not: it is
    # replaced like an old revision's replica — its successor ready first, then it drains.
    sick: str | None = None

    @property
    def stopping(self) -> bool:
        """Draining or being stopped: the room it holds comes free soon."""
        return self.job_state == JobState.CANCELLING or self.draining_at is not None

    @property
    def state(self) -> EndpointReplicaState:
        """As `corral endpoint get` shows it."""
        if self.stopping:
            return EndpointReplicaState.DRAINING
        if self.replica_state != ReplicaState.RUNNING:
            return EndpointReplicaState.STARTING
        if self.ready:
            return EndpointReplicaState.READY
        if self.ready_at is not None:
            return EndpointReplicaState.UNREADY
        return EndpointReplicaState.STARTING


@dataclass(frozen=True)
class Failure:
    """A replica job of the current revision that failed (crash backoff counts them)."""

    finished_at: float
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Traffic:
    """What the gateways saw of the endpoint since the last decision, added up."""

    in_flight: float = 0.0
    arrivals: int = 0
    held: int = 0
    per_replica: Mapping[str, int] = field(default_factory=dict)  # replica id -> in flight
    known: bool = False  # no gateway answered: silence is not "no traffic"


@dataclass(frozen=True)
class EndpointFacts:
    name: str
    revision: int
    desired_replicas: int
    policy: EndpointPolicy
    replicas: tuple[ReplicaFacts, ...] = ()
    failures: tuple[Failure, ...] = ()  # of the current revision, recent ones
    traffic: Traffic = field(default_factory=Traffic)
    autoscale: autoscale.AutoscaleState | None = None  # None: none stored yet
    deleting: bool = False


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Submit one replica job of the current revision."""

    reason: str


@dataclass(frozen=True)
class Drain:
    """Take a ready replica out of the routes; it finishes what it has."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class Stop:
    """Stop a replica job now."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class Replace:
    """Stop a current-revision replica that will not serve; a `Start` takes its place."""

    job_id: str
    reason: str


Action = Start | Drain | Stop | Replace


@dataclass(frozen=True)
class EndpointPlan:
    actions: tuple[Action, ...] = ()
    desired: int = 0
    # None (deleting): the endpoint's reason, notes and autoscaler state stay as they are.
    reason: str | None = None
    notes: Mapping[str, str] | None = None  # "autoscaler", and "public" for the gateways
    autoscale: autoscale.AutoscaleState | None = None
    by_replacement: bool = False  # the rollout stops an old replica for its room
    delete: bool = False  # deleting, and no replica is left: remove the endpoint


# -- deciding ----------------------------------------------------------------------------------


def reconcile(facts: EndpointFacts, now: float) -> EndpointPlan:
    if facts.deleting:
        return _delete(facts, now)
    policy = facts.policy
    replicas = facts.replicas
    ready = sum(1 for r in replicas if r.state == EndpointReplicaState.READY)
    decision = _autoscale(facts, now, ready)
    desired = decision.desired

    actions: list[Action] = []
    live = [r for r in replicas if not r.stopping]
    sick = {r.job_id: r.sick for r in live if r.sick is not None}
    current = [r for r in live if r.revision == facts.revision and r.job_id not in sick]
    old = [r for r in live if r.revision != facts.revision or r.job_id in sick]

    broken = {r.job_id: why for r in current if (why := _broken(r, policy, now)) is not None}
    healthy = [r for r in current if r.job_id not in broken]
    missing = desired - len(healthy)
    failing = _backoff(facts, now) if missing > 0 else None
    if missing > 0 and failing is None:
        replacing = iter(broken)
        for _ in range(missing):
            gone = next(replacing, None)
            if gone is not None:
                why = f"in place of replica job {gone}, which {broken[gone]}"
            elif sick:
                job_id, what = next(iter(sick.items()))
                why = f"in place of replica job {job_id} on sick hardware ({what})"
            elif old:
                why = f"rolling out revision {facts.revision}"
            else:
                why = f"scaling to {desired} (have {len(healthy)})"
            actions.append(Start(why))
    for job_id, why in broken.items():
        actions.append(Replace(job_id, f"it {why}"))

    draining: list[ReplicaFacts] = []  # drained by this plan: may finish in it too
    # Replaced ones hold room until they have stopped, like those already stopping.
    going = len(broken)
    if missing < 0:
        # Fewer wanted: not-yet-ready ones go first (no traffic lost), then the oldest.
        extra = sorted(
            healthy, key=lambda r: (r.state == EndpointReplicaState.READY, r.submitted_at)
        )[:-missing]
        for r in extra:
            actions.append(_retire(r, f"scaling down to {desired}", draining, now))
            going += r.replica_state in ACTIVE_REPLICA_STATES
        retired = {r.job_id for r in extra}
        healthy = [r for r in healthy if r.job_id not in retired]

    statuses = [_status(r) for r in healthy]
    kinds = [rollout.pending_kind(r.job_reason) for r in healthy if r.job_state == JobState.PENDING]
    room_wanted = rollout.PendingKind.ROOM in kinds
    plan = rollout.decide(
        rollout.RolloutFacts(
            revision=facts.revision,
            desired=desired,
            min_replicas=policy.min_replicas,
            old=tuple(
                rollout.OldReplica(
                    id=r.job_id,
                    ready=r.state == EndpointReplicaState.READY,
                    submitted_at=r.submitted_at,
                    frees_room=room_wanted and r.frees_room,
                )
                for r in old
            ),
            new_ready=sum(1 for s in statuses if s.phase == rollout.Phase.READY),
            new_starting=sum(
                1 for s in statuses if s.phase in (rollout.Phase.STARTING, rollout.Phase.UNREADY)
            ),
            new_waiting_for_room=kinds.count(rollout.PendingKind.ROOM),
            stopping=going + sum(1 for r in replicas if r.stopping),
            old_stopping=sum(1 for r in replicas if r.stopping and r.revision != facts.revision),
        )
    )
    by_id = {r.job_id: r for r in old}
    for job_id in plan.stop:
        what = (
            f"on sick hardware ({sick[job_id]})"
            if job_id in sick
            else (f"revision {by_id[job_id].revision}")
        )
        actions.append(Stop(job_id, f"{what} and not serving"))
    for job_id in plan.retire:
        if job_id in sick:
            why = f"its hardware is sick ({sick[job_id]}): its replacement carries the load"
        elif plan.by_replacement:
            why = "its room goes to a new replica (rollout by replacement)"
        else:
            why = f"rolling out revision {facts.revision}: the others carry the load"
        actions.append(_retire(by_id[job_id], why, draining, now))
    actions.extend(_finish_draining([*replicas, *draining], policy, facts.traffic, now))

    status = rollout.EndpointStatus(
        desired=desired,
        replicas=tuple(statuses),
        readiness_path=policy.readiness_path,
        rollout=plan.reason,
        failing=failing,
        idle=decision.stable_in_flight == 0 and not decision.panicking,
    )
    public = rollout.public_reason(status, kinds)
    return EndpointPlan(
        actions=tuple(actions),
        desired=desired,
        reason=rollout.headline(status),
        notes={"autoscaler": decision.reason, **({"public": public} if public else {})},
        autoscale=decision.state,
        by_replacement=plan.by_replacement,
    )


def _autoscale(facts: EndpointFacts, now: float, ready: int) -> autoscale.ScaleDecision:
    policy = facts.policy.autoscaler()
    # Nothing stored yet (a new endpoint, or one from before the state was stored): carry
    # on from the stored count, not from scratch.
    state = facts.autoscale or autoscale.AutoscaleState.initial(policy, now, facts.desired_replicas)
    t = facts.traffic
    sample = (
        autoscale.LoadSample(at=now, in_flight=t.in_flight, arrivals=t.arrivals, held=t.held)
        if t.known or t.held
        else None
    )
    return autoscale.decide(policy, state, now, ready, sample)


def _broken(r: ReplicaFacts, policy: EndpointPolicy, now: float) -> str | None:
    """Why a replica will get no traffic (the gateway routes to ready ones only), or None."""
    if r.replica_state != ReplicaState.RUNNING:
        return None
    if r.ready is False and r.ready_at is not None:
        return "was ready, then failed its liveness probe"
    started = r.started_at if r.started_at is not None else r.submitted_at
    if not r.ready and now - started > policy.readiness_timeout_s:
        return f"was not ready {policy.readiness_timeout_s:g} s after it started"
    return None


def _retire(r: ReplicaFacts, why: str, draining: list[ReplicaFacts], now: float) -> Action:
    """A ready replica drains (its requests finish); any other stops now."""
    if r.state != EndpointReplicaState.READY:
        return Stop(r.job_id, f"{why}; not serving yet")
    draining.append(
        ReplicaFacts(
            job_id=r.job_id,
            revision=r.revision,
            job_state=r.job_state,
            submitted_at=r.submitted_at,
            draining_at=now,
            replica_id=r.replica_id,
        )
    )
    return Drain(r.job_id, why)


def _finish_draining(
    replicas: list[ReplicaFacts], policy: EndpointPolicy, traffic: Traffic, now: float
) -> list[Action]:
    """Stop draining replicas once the gateways report them idle, or the drain timeout
    passed. Without a count for a replica, its requests get the whole drain timeout."""
    done: list[Action] = []
    for r in replicas:
        if r.draining_at is None or r.job_state == JobState.CANCELLING:
            continue
        waited = now - r.draining_at
        quiet = (
            traffic.known
            and r.replica_id is not None
            and r.replica_id in traffic.per_replica
            and traffic.per_replica[r.replica_id] == 0
        )
        if quiet and waited >= DRAIN_QUIET_S:
            done.append(Stop(r.job_id, "drained: the gateways report no request in flight"))
        elif waited >= policy.drain_timeout_s:
            done.append(Stop(r.job_id, f"drain timeout of {policy.drain_timeout_s:g} s passed"))
    return done


def _backoff(facts: EndpointFacts, now: float) -> str | None:
    """Why not to start a replica now (they keep failing), or None."""
    failed = sorted(
        (f for f in facts.failures if f.finished_at > now - FAILURE_MEMORY_S),
        key=lambda f: f.finished_at,
        reverse=True,
    )
    if not failed:
        return None
    last = failed[0]
    last_at = last.finished_at
    wait = min(MAX_BACKOFF_S, 2.0 ** (len(failed) - 1))
    if now >= last_at + wait:
        return None
    detail = f"exit code {last.exit_code}" if last.exit_code is not None else None
    detail = detail or last.reason or "it failed"
    return (
        f"replicas keep failing ({len(failed)} in {FAILURE_MEMORY_S / 60:g}m, last: {detail}); "
        f"next try in {last_at + wait - now:.0f}s — see `corral endpoint logs {facts.name}`"
    )


def _status(r: ReplicaFacts) -> rollout.ReplicaStatus:
    if r.job_state == JobState.PENDING:
        return rollout.ReplicaStatus(rollout.Phase.PENDING, r.job_reason)
    state = r.state
    if state == EndpointReplicaState.READY:
        return rollout.ReplicaStatus(rollout.Phase.READY)
    # A running replica's reason is its readiness probe's words (the agent reports them).
    why = r.replica_reason if r.replica_state == ReplicaState.RUNNING else None
    phase = (
        rollout.Phase.UNREADY if state == EndpointReplicaState.UNREADY else rollout.Phase.STARTING
    )
    return rollout.ReplicaStatus(phase, why)


def _delete(facts: EndpointFacts, now: float) -> EndpointPlan:
    actions: list[Action] = []
    draining: list[ReplicaFacts] = []
    for r in facts.replicas:
        if not r.stopping:
            actions.append(_retire(r, "the endpoint is being deleted", draining, now))
    actions.extend(_finish_draining([*facts.replicas, *draining], facts.policy, facts.traffic, now))
    return EndpointPlan(
        actions=tuple(actions),
        desired=facts.desired_replicas,
        delete=not facts.replicas,
    )
