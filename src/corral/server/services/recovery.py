"""Training recovery in the store: attempts, progress, and core.recovery's decisions applied.

core/recovery.py decides (pure); this module reads what it needs from the store (the
replicas, their nodes' conditions, GPUs reported unhealthy under them as signals, the job's
recovery memory), asks it, and writes what settling.apply_recovery is told to: the memory
(`memory_of`/`remember`, the only readers and writers of `jobs.recovery` here), nodes
cordoned, and each attempt's record for goodput accounting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.core import goodput
from corral.core import recovery as core
from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.core.states import NodeCondition, ReplicaState
from corral.server.services.effects import Effects
from corral.server.services.specs import job_spec
from corral.server.store.tables import Attempt, Job, Node, Replica
from corral.spec.job import JobSpec
from corral.wire import agent as wire
from corral.wire.api import AttemptView, GoodputView

# A peer's death makes the survivors exit within milliseconds, before its node is known
# lost: a gang's non-zero exit is blamed on the script only after every node of the gang
# has been heard from since (heartbeats are 1 s apart) and this long has passed.
ATTRIBUTION_WINDOW_S = 2.0

log = logging.getLogger("corral.server.recovery")

# Keyed by the stored string (a StrEnum member is equal to its string and hashes alike).
_PHASES: dict[str, core.ReplicaPhase] = {
    ReplicaState.ASSIGNED: core.ReplicaPhase.STARTING,
    ReplicaState.RUNNING: core.ReplicaPhase.RUNNING,
    ReplicaState.SUCCEEDED: core.ReplicaPhase.SUCCEEDED,
    ReplicaState.FAILED: core.ReplicaPhase.FAILED,
    ReplicaState.STOPPED: core.ReplicaPhase.STOPPED,
    ReplicaState.LOST: core.ReplicaPhase.LOST,
}
# What an agent may name as the infrastructure cause of a replica's failure.
_CAUSES = {core.Cause.PORT_IN_USE.value: core.Cause.PORT_IN_USE}


def policy_for(replicas: int) -> core.RecoveryPolicy:
    # One replica has no peer to outlive it: its own exit needs no attribution wait.
    window = ATTRIBUTION_WINDOW_S if replicas > 1 else 0.0
    return core.RecoveryPolicy(attribution_window_s=window)


# -- attempts -----------------------------------------------------------------------------


def attempt_row(
    session: Session, job_id: str, attempt: int, replicas: int, now: float
) -> dict[str, object]:
    """A new attempt's row; it resumes from the newest checkpoint any earlier one reported."""
    start = None
    if attempt > 1:  # a first attempt has nothing to resume from
        start = session.scalar(
            select(Attempt.checkpoint_step)
            .where(Attempt.job_id == job_id, Attempt.checkpoint_step.is_not(None))
            .order_by(Attempt.checkpoint_step.desc())
            .limit(1)
        )
    return {
        "job_id": job_id,
        "attempt": attempt,
        "replicas": replicas,
        "started_at": now,
        "start_step": start or 0,
    }


def close_attempt(
    session: Session, job: Job, now: float, cause: core.Cause | None, reason: str | None
) -> None:
    row = session.get(Attempt, (job.id, job.attempt))
    if row is not None and row.ended_at is None:
        row.ended_at = now
        row.end_cause = None if cause is None else cause.value
        row.reason = reason


def record_progress(
    session: Session, replica: Replica, report: wire.ReplicaReport, now: float
) -> bool:
    """Take a replica's reported step and checkpoint; True if it advanced (now is its time)."""
    first_report = replica.step is None
    advanced = False
    if report.step is not None and (replica.step is None or report.step > replica.step):
        replica.step = report.step
        replica.progress_at = now  # the server's clock: nodes' clocks may disagree
        advanced = True
    new_checkpoint = report.checkpoint_step is not None and (
        replica.checkpoint_step is None or report.checkpoint_step > replica.checkpoint_step
    )
    if new_checkpoint:
        replica.checkpoint_step = report.checkpoint_step
    if not (advanced or new_checkpoint):
        return False
    row = session.get(Attempt, (replica.job_id, replica.attempt))
    if row is None:
        return advanced
    resumed = _resumed_from(session, row, report) if first_report else None
    if resumed is not None:
        row.start_step = resumed
    if advanced and replica.step is not None:
        if row.first_step_at is None and replica.step > row.start_step:
            row.first_step_at = now
        row.step = max(row.step or 0, replica.step)
    if new_checkpoint and replica.rank == 0:
        # Rank 0's checkpoint is the job's (DDP saves once, from rank 0).
        row.checkpoint_step = replica.checkpoint_step
        row.checkpoint_at = now
    return advanced


def _resumed_from(session: Session, row: Attempt, report: wire.ReplicaReport) -> int | None:
    """The checkpoint a replica's first report shows it resumed from, when it is newer
    than the one the attempt was opened with; else None.

    An attempt opens from the newest checkpoint rank 0 reported, but a node lost within a
    progress poll (1 s) of saving one takes that report with it, while the script finds
    the checkpoint on disk and resumes from it. A replica's progress file is new with each
    attempt, so the checkpoint_step of its first report is this attempt's own: the one it
    resumed from, or one it saved since. Believed only if a replica of an earlier attempt
    (a survivor's exit report, say) had already reported it complete: then it existed
    before this attempt started, and a script that resumes from its newest checkpoint
    cannot have started from an older one.
    """
    claimed = report.checkpoint_step
    if claimed is None or claimed <= row.start_step:
        return None
    known = session.scalar(
        select(func.max(Replica.checkpoint_step)).where(
            Replica.job_id == row.job_id, Replica.attempt < row.attempt
        )
    )
    return claimed if known is not None and claimed <= known else None


def attempt_views(
    session: Session, job: Job, now: float
) -> tuple[list[AttemptView], GoodputView | None]:
    rows = list(
        session.scalars(select(Attempt).where(Attempt.job_id == job.id).order_by(Attempt.attempt))
    )
    if not rows:
        return [], None
    views = [
        AttemptView(
            attempt=r.attempt,
            replicas=r.replicas,
            started_at=r.started_at,
            ended_at=r.ended_at,
            end_cause=r.end_cause,
            reason=r.reason,
            start_step=r.start_step,
            step=r.step,
            checkpoint_step=r.checkpoint_step,
        )
        for r in rows
    ]
    end = job.finished_at if job.finished_at is not None else now
    g = goodput.goodput([attempt_record(r) for r in rows], end)
    return views, GoodputView(
        ettr=round(g.ettr, 4),
        wall_s=round(g.wall_s, 3),
        productive_s=round(g.productive_s, 3),
        startup_s=round(g.startup_s, 3),
        lost_by_cause={
            c.value: round(s, 3)
            for c, s in sorted(g.lost_by_cause.items(), key=lambda i: i[0].value)
        },
    )


def attempt_record(row: Attempt) -> goodput.AttemptRecord:
    return goodput.AttemptRecord(
        started_at=row.started_at,
        ended_at=row.ended_at,
        end_cause=None if row.end_cause is None else core.Cause(row.end_cause),
        start_step=row.start_step,
        first_step_at=row.first_step_at,
        step=row.step,
        checkpoint_step=row.checkpoint_step,
        checkpoint_at=row.checkpoint_at,
    )


# -- deciding -----------------------------------------------------------------------------


def decide_attempt(
    session: Session, job: Job, replicas: list[Replica], now: float
) -> core.Decision:
    """core.recovery's decision for the job's current attempt."""
    spec = job_spec(job)
    size = len(replicas) or spec.replicas
    nodes = _nodes(session, {r.node_id for r in replicas})
    names = {n.id: n.name for n in nodes.values()}
    attempt_row = session.get(Attempt, (job.id, job.attempt))
    state = core.AttemptState(
        attempt=job.attempt,
        started_at=attempt_row.started_at if attempt_row else min(r.created_at for r in replicas),
        spec=core.JobRecoverySpec(
            replicas=spec.replicas,  # the full size: recovery may shrink an elastic job
            max_restarts=spec.max_restarts,
            min_replicas=spec.min_replicas,
            progress_timeout_s=spec.progress_timeout,
        ),
        replicas=tuple(
            core.ReplicaView(
                rank=r.rank,
                node=names.get(r.node_id, r.node_id),
                phase=_PHASES[r.state],
                exit_code=r.exit_code,
                finished_at=r.finished_at,
                step=r.step,
                progress_at=r.progress_at,
                cause=_CAUSES.get(r.infra_cause or ""),
            )
            for r in replicas
        ),
        nodes={
            n.name: core.NodeView(condition=_condition(n), last_heard_at=n.last_heartbeat_at)
            for n in nodes.values()
        },
        signals=_signals(replicas, nodes, now),
        memory=memory_of(job),
        start_step=attempt_row.start_step if attempt_row else None,
        slots=_LazySlots(lambda: free_slots(session, spec, job.id)),
    )
    return core.decide(state, now, policy_for(size))


class _LazySlots(Mapping[str, int]):
    """Free slots per node, computed on first use: only a failed attempt needs them, and
    they cost a look at every node and active replica."""

    def __init__(self, compute: Callable[[], dict[str, int]]) -> None:
        self._compute = compute
        self._value: dict[str, int] | None = None

    def _get(self) -> dict[str, int]:
        if self._value is None:
            self._value = self._compute()
        return self._value

    def __getitem__(self, key: str) -> int:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _condition(node: Node) -> NodeCondition:
    try:
        return NodeCondition(node.condition)
    except ValueError:  # written by a newer version: take nothing new there
        return NodeCondition.CORDONED


def _signals(
    replicas: list[Replica], nodes: Mapping[str, Node], now: float
) -> tuple[core.Signal, ...]:
    """What the server knows beyond the replicas' states and the nodes' conditions: a GPU
    that the node's agent reports unhealthy under a replica of this attempt. The scheduler
    places nothing on such a GPU, so one under a replica failed since it was placed — the
    likeliest cause of that replica's failure, and not the script's fault."""
    found: list[core.Signal] = []
    for r in replicas:
        node = nodes.get(r.node_id)
        if node is None or not r.gpus:
            continue
        bad = sorted(
            g["index"] for g in node.gpus if g["index"] in r.gpus and not g.get("healthy", True)
        )
        if bad:
            # Reported at the node's last message at the latest (the signal's own time is
            # not sent): what counts is that it is this attempt's, which it is.
            at = min(now, node.last_heartbeat_at if node.last_heartbeat_at is not None else now)
            at = max(at, r.created_at)
            gpus = ", ".join(str(i) for i in bad)
            found.append(
                core.Signal(core.Cause.GPU_XID, at, node.name, f"GPU {gpus} reported unhealthy")
            )
    return tuple(found)


def _nodes(session: Session, ids: Iterable[str]) -> dict[str, Node]:
    wanted = set(ids)
    rows = session.scalars(
        select(Node).where((Node.condition == NodeCondition.READY) | Node.id.in_(wanted))
    )
    return {n.id: n for n in rows}


def free_slots(session: Session, spec: JobSpec, job_id: str) -> dict[str, int]:
    """Ready node name -> replicas of this job that fit there, its own replicas released."""
    res = spec.resources
    nodes = list(
        session.scalars(
            select(Node).where(Node.condition == NodeCondition.READY, Node.connected.is_(True))
        )
    )
    held: dict[str, list[Replica]] = {n.id: [] for n in nodes}
    for r in session.scalars(
        select(Replica).where(Replica.state.in_(ACTIVE_REPLICA_STATES), Replica.job_id != job_id)
    ):
        if r.node_id in held:
            held[r.node_id].append(r)
    slots: dict[str, int] = {}
    for n in nodes:
        mine = held[n.id]
        used = {g for r in mine for g in r.gpus}
        free_gpus = sum(
            1
            for g in n.gpus
            if g["index"] not in used
            and g.get("healthy", True)
            and (res.gpus.type is None or res.gpus.type.upper() in str(g["model"]).upper())
        )
        limits = [
            (n.cpus - sum(r.cpus for r in mine)) / res.cpus if res.cpus > 0 else float("inf"),
            (n.memory_mb - sum(r.memory_mb for r in mine)) / res.memory
            if res.memory > 0
            else float("inf"),
        ]
        if res.gpus.count > 0:
            limits.append(free_gpus / res.gpus.count)
        fit = min(limits)
        slots[n.name] = max(0, int(fit)) if fit != float("inf") else spec.replicas
    return slots


def replan_waiting(session: Session, job: Job, now: float) -> Effects:
    """An elastic job waiting for a replacement node: shrink once the wait is over."""
    spec = job_spec(job)
    last = session.get(Attempt, (job.id, job.attempt))
    failed_at = last.ended_at if last is not None and last.ended_at is not None else now
    nodes = {n.name: core.NodeView(condition=_condition(n)) for n in _nodes(session, ()).values()}
    excluded = memory_of(job).excluded_at(now)
    nxt = core.plan_next_attempt(
        core.JobRecoverySpec(spec.replicas, spec.max_restarts, spec.min_replicas),
        free_slots(session, spec, job.id),
        nodes,
        excluded,
        failed_at,
        now,
        policy_for(spec.replicas),
    )
    return apply_next_attempt(job, nxt)


def apply_next_attempt(job: Job, nxt: core.NextAttempt) -> Effects:
    """Write the waiting job's next attempt. Its verdict, RESTART or WAIT, is no state of
    its own here: the job is pending either way and the scheduler places it when it fits;
    what changes is its size, the reason shown and when to look again."""
    size = job_spec(job).replicas
    job.next_replicas = nxt.replicas if nxt.replicas != size else None
    job.recheck_at = nxt.recheck_at
    job.reason = nxt.reason
    return Effects(wake_scheduler=True)


# -- the job's recovery memory: the one place that reads and writes `jobs.recovery` -------


def memory_of(job: Job) -> core.RecoveryMemory:
    return core.RecoveryMemory.from_json(job.recovery)


def remember(job: Job, memory: core.RecoveryMemory) -> None:
    """Keep the counters and exclusions core.recovery needs at the next decision."""
    raw = memory.to_json()
    if job.recovery != raw:  # an unchanged memory is no change of the job's row
        job.recovery = raw


# -- cordoning --------------------------------------------------------------------------


def cordon(session: Session, names: Iterable[str], job: Job, why: str | None) -> list[str]:
    """Take the named nodes out of scheduling for every job: they run what they have and
    take nothing new until an operator looks. Only a ready node changes: a lost one is
    gone anyway and an unhealthy one is already out. Returns the nodes cordoned now.

    The node's cordon reason names the job; the job's reason names the nodes."""
    wanted = sorted(set(names))
    if not wanted:
        return []
    done: list[str] = []
    for node in session.scalars(select(Node).where(Node.name.in_(wanted)).order_by(Node.id)):
        if node.condition != NodeCondition.READY:
            continue
        node.condition = NodeCondition.CORDONED
        node.cordon_reason = f"suspect hardware: job {job.name} attempt {job.attempt}"
        done.append(node.name)
        log.warning(
            "node %s cordoned: suspect hardware in job %s (%s), attempt %d: %s",
            node.name,
            job.name,
            job.id,
            job.attempt,
            why or "",
        )
    return done


def needs_recheck(job: Job, now: float) -> bool:
    return job.recheck_at is not None and job.recheck_at <= now
