"""How an endpoint moves to a new revision, and the sentences that say where it stands. Pure.

Rollout. New-revision replicas are started beside the old ones (a **surge**); an old replica
drains only while ready capacity stays at `max(desired, min_replicas)`. When a new replica
cannot be placed because no node has room, the surge would wait forever (the old replicas
hold the room it needs), so the rollout goes on **by replacement**: one old replica is
drained and stopped, its room goes to a new one, and the next old one goes only once that
new one is ready. One at a time, so ready capacity dips by one replica at most.

With room for only one replica (`min_replicas` 1 on one full node, the README's example on a
small machine) the dip is an outage until the new replica is ready. It is taken anyway:
the alternative is a rollout that never finishes while the user's update is silently
ignored. The gateway holds requests meanwhile (up to the endpoint's `hold_timeout`), and
the endpoint's reason says so. An old replica is stopped for room only where stopping it
frees room the new one fits in (`OldReplica.frees_room`): stopping a CPU replica for a
new revision that waits for a GPU would be an outage for nothing.

Reasons. The endpoint's headline says what is happening to its replicas in their own words
(the scheduler's pending reason, the readiness probe's), never the autoscaler's arithmetic:
that goes in a field of its own. `public_reason` is the short, fixed-vocabulary version the
gateway may put in a 503 to anyone who calls the endpoint: about capacity and readiness
only, never the spec, the environment or other workspaces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from corral.core.scheduler import reasons

# -- what a pending replica waits for ------------------------------------------------------


class PendingKind(StrEnum):
    ROOM = "room"  # may fit once something stops: a rollout may make the room itself
    NEVER_FITS = "never-fits"  # not as asked, on the nodes there are now
    NO_NODES = "no-nodes"
    QUOTA = "quota"
    OTHER = "other"  # not decided yet, or a reason this module does not know


def _pattern(template: str) -> re.Pattern[str]:
    """A scheduler reason template as a prefix pattern: the suffixes it may carry
    (preemption, reservation) and its values do not matter here."""
    parts = re.split(r"\{[^}]*\}", template)
    return re.compile(".*?".join(re.escape(p) for p in parts), re.DOTALL)


# Built from scheduler/reasons.py, so a reworded reason is still recognised.
_KINDS: tuple[tuple[PendingKind, re.Pattern[str]], ...] = (
    *(
        (PendingKind.NEVER_FITS, _pattern(t))
        for t in (
            reasons.UNKNOWN_TOPOLOGY,
            reasons.SELECTOR_MATCHES_NONE,
            reasons.ALL_EXCLUDED,
            reasons.NODE_TOO_SMALL,
            reasons.NO_SUCH_GPU,
            reasons.NEVER_HAD_MODEL,
            reasons.REPLICA_TOO_BIG,
            reasons.GANG_TOO_BIG,
        )
    ),
    (PendingKind.NO_NODES, _pattern(reasons.NO_NODES)),
    (PendingKind.ROOM, _pattern(reasons.NO_ROOM)),
    (PendingKind.ROOM, _pattern(reasons.NO_ROOM_CPU)),
    (PendingKind.QUOTA, _pattern(reasons.QUOTA_EXHAUSTED)),
    (PendingKind.QUOTA, _pattern(reasons.QUOTA_NEVER)),
)


def pending_kind(reason: str | None) -> PendingKind:
    """What a pending job waits for, from the reason the scheduler gave it."""
    if not reason:
        return PendingKind.OTHER
    for kind, pattern in _KINDS:
        if pattern.match(reason):
            return kind
    return PendingKind.OTHER


# -- the rollout decision --------------------------------------------------------------------


@dataclass(frozen=True)
class OldReplica:
    """A live replica of an earlier revision (not draining, not being stopped)."""

    id: str
    ready: bool
    submitted_at: float
    frees_room: bool = False  # stopping it leaves room for a new-revision replica


@dataclass(frozen=True)
class RolloutFacts:
    revision: int
    desired: int
    min_replicas: int
    old: tuple[OldReplica, ...]
    new_ready: int = 0
    new_starting: int = 0  # placed, not ready yet
    new_waiting_for_room: int = 0  # pending: no node has room now
    stopping: int = 0  # replicas draining or stopping: the room they hold comes free soon
    old_stopping: int = 0  # of which old-revision ones (the rollout is not over until gone)


@dataclass(frozen=True)
class RolloutPlan:
    stop: tuple[str, ...] = ()  # old replicas that serve nothing: stop now
    retire: tuple[str, ...] = ()  # ready old replicas: drain, then stop
    by_replacement: bool = False  # an old replica goes to make room (no surge possible)
    reason: str | None = None  # None: no rollout under way


def decide(facts: RolloutFacts) -> RolloutPlan:
    """Which old replicas go now, and what the rollout is doing."""
    if not facts.old and not facts.old_stopping:
        return RolloutPlan()
    stop = tuple(o.id for o in facts.old if not o.ready)
    ready_old = sorted((o for o in facts.old if o.ready), key=lambda o: o.submitted_at)
    keep = max(facts.desired, facts.min_replicas)
    retire: list[str] = []
    # Surge: an old one goes once the others and the new ready ones carry the target.
    for old in ready_old:
        if facts.new_ready + len(ready_old) - len(retire) - 1 < keep:
            break
        retire.append(old.id)
    remaining = [o for o in ready_old if o.id not in retire]
    progress = f"{facts.new_ready} of {facts.desired} ready"
    head = f"rolling out revision {facts.revision}"
    waiting = facts.new_waiting_for_room > 0
    going = facts.old_stopping + len(retire) + len(stop)
    draining = f"; {_n(going, 'old replica')} draining" if going else ""
    if retire or not waiting:
        return RolloutPlan(stop, tuple(retire), False, f"{head}: {progress}{draining}")

    replace_head = f"{head} by replacement: no node has room for a surge"
    if facts.stopping or stop:
        # The room of a replica already on its way out is the next new one's.
        going = facts.stopping + len(stop)
        return RolloutPlan(
            stop,
            (),
            True,
            f"{replace_head}; waiting for {_n(going, 'replica')} to stop; {progress}",
        )
    if not remaining:
        return RolloutPlan(stop, (), False, f"{head}: {progress}{draining}")
    if facts.new_starting:
        # One at a time: the next old one goes once its replacement is ready.
        return RolloutPlan(
            stop, (), True, f"{replace_head}; {facts.new_starting} new starting; {progress}"
        )
    candidates = [o for o in remaining if o.frees_room]
    if not candidates:
        return RolloutPlan(
            stop,
            (),
            False,
            f"{head}: {progress}; the new replicas wait for room that stopping an old one "
            "would not free",
        )
    victim = candidates[0]
    ready_after = facts.new_ready + len(remaining) - 1
    reason = f"{replace_head}; stopped 1 old replica; {progress}"
    if ready_after == 0:
        reason += (
            " (no replica serves until the new one is ready: there is no room to keep one; "
            "requests are held meanwhile)"
        )
    elif ready_after < facts.min_replicas:
        reason += (
            f" ({ready_after} serve until the new one is ready, below min_replicas="
            f"{facts.min_replicas}: there is no room to keep more)"
        )
    return RolloutPlan(stop, (victim.id,), True, reason)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# -- reasons -------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "pending"  # no node yet
    STARTING = "starting"  # placed, readiness not passed yet
    READY = "ready"
    UNREADY = "unready"  # was ready, fails its probes now
    DRAINING = "draining"


@dataclass(frozen=True)
class ReplicaStatus:
    """One current-revision replica, as the reasons see it."""

    phase: Phase
    reason: str | None = None  # pending: the scheduler's; starting/unready: the probe's


@dataclass(frozen=True)
class EndpointStatus:
    desired: int
    replicas: tuple[ReplicaStatus, ...]
    readiness_path: str
    rollout: str | None = None  # RolloutPlan.reason
    failing: str | None = None  # replicas keep failing: why, and when the next try is
    idle: bool = False  # no request in flight over the autoscaler's stable window


def headline(status: EndpointStatus) -> str:
    """The endpoint's reason: what its replicas are doing, in their own words."""
    if status.failing:
        return status.failing
    trouble = _trouble(status)
    if status.rollout:
        return status.rollout + (f"; {trouble}" if trouble else "")
    ready = sum(1 for r in status.replicas if r.phase == Phase.READY)
    if status.desired == 0 and not status.replicas:
        return "scaled to zero: the first request starts a replica"
    if ready >= max(status.desired, 1):
        return f"{_n(ready, 'replica')} ready; " + ("idle" if status.idle else "serving")
    if ready == 0:
        return trouble or f"starting {_n(max(status.desired, 1), 'replica')}"
    scaling = f"scaling to {_n(status.desired, 'replica')}: {ready} ready"
    return f"{scaling}; {trouble}" if trouble else scaling


def _trouble(status: EndpointStatus) -> str | None:
    """Why replicas that should serve do not, most blocking first."""
    by_phase: dict[Phase, list[ReplicaStatus]] = {}
    for replica in status.replicas:
        by_phase.setdefault(replica.phase, []).append(replica)
    pending = by_phase.get(Phase.PENDING, [])
    if pending:
        why = next((r.reason for r in pending if r.reason), None)
        what = f"{_n(len(pending), 'replica')} waiting for a node"
        return f"{what}: {why}" if why else what
    unready = by_phase.get(Phase.UNREADY, [])
    if unready:
        why = next((r.reason for r in unready if r.reason), "it fails its liveness probe")
        return f"{_n(len(unready), 'replica')} not ready: {why}"
    starting = by_phase.get(Phase.STARTING, [])
    if starting:
        why = next((r.reason for r in starting if r.reason), None)
        what = f"{_n(len(starting), 'replica')} starting"
        if why:
            return f"{what}: {why}"
        return f"{what}: waiting for GET {status.readiness_path} to answer 2xx"
    return None


# Of a probe's words, the part a caller of the endpoint may read: the status code. Not the
# path: it is the spec's, and may carry a query string (`/health?key=...`).
_PROBE_ANSWER = re.compile(r"GET /\S{0,2000} answered (\d{3})")


def public_reason(status: EndpointStatus, pending: Sequence[PendingKind] = ()) -> str | None:
    """Why no replica serves, for a 503 anyone calling the endpoint may read; None when
    replicas are ready. A fixed vocabulary: no spec, environment, names or other work."""
    phases = {r.phase for r in status.replicas}
    if Phase.READY in phases:
        return None
    if status.failing:
        return "its replicas keep failing as they start; corral retries with a delay"
    if PendingKind.NEVER_FITS in pending:
        return "no node can run a replica as asked"
    if PendingKind.ROOM in pending:
        return "no node has room for a replica now"
    if PendingKind.NO_NODES in pending:
        return "no node is connected"
    if PendingKind.QUOTA in pending:
        return "its workspace's GPU quota is used up"
    if Phase.PENDING in phases or pending:
        return "a replica is waiting to be placed"
    for replica in status.replicas:
        if replica.phase in (Phase.UNREADY, Phase.STARTING) and replica.reason:
            answer = _PROBE_ANSWER.search(replica.reason)
            if answer:
                return f"replica not ready: its readiness check answered {answer.group(1)}"
    if Phase.UNREADY in phases:
        return "its replicas fail their readiness checks"
    if Phase.STARTING in phases:
        return "a replica is starting and not ready yet"
    return None
