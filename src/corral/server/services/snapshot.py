"""The scheduler's snapshot, loaded round after round at the cost of what changed.

Each round reads a few narrow columns of every ready node, active replica and live job
(versions, states, ids) and loads whole rows only for what is new or has a new version.
What did not change comes back as the very same NodeState/RunningJob/PendingJob object as
last round, which is how the core's `Scheduler` knows to skip it (see
corral/core/scheduler/incremental.py). The store stays the truth: nothing here is trusted
past a version check, and a fresh loader gives the same snapshot by value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, select
from sqlalchemy.orm import Session

from corral.core.lifecycle import ACTIVE_REPLICA_STATES, LIVE_JOB_STATES
from corral.core.placement import (
    NodeState,
    ReplicaPlacement,
    RunningJob,
    Snapshot,
)
from corral.core.states import Desired, JobState, NodeCondition
from corral.server.services.fleet_models import fleet_models
from corral.server.services.snapshot_rows import (
    LIVE_COLUMNS,
    PENDING_COLUMNS,
    LiveJob,
    PendingEntry,
    ReplicaFacts,
    demand_of,
    excluded_now,
    node_base,
    pending_entry,
)
from corral.server.services.specs import specs_by_id
from corral.server.store.db import in_chunks
from corral.server.store.tables import Job, Node, Quota, Replica, Workspace
from corral.spec.job import JobSpec

_STARTED = (JobState.STARTING, JobState.RUNNING)


@dataclass
class Loaded:
    """One round's snapshot, and what applying its plan checks against."""

    snapshot: Snapshot
    jobs: Mapping[str, LiveJob]  # every live job as this round read it
    specs: Mapping[str, JobSpec]  # pending job id -> its spec

    @property
    def versions(self) -> dict[str, int]:
        """Job id -> version, for every pending and running job of the snapshot."""
        ids = [j.id for j in self.snapshot.pending] + [j.id for j in self.snapshot.running]
        return {i: self.jobs[i].version for i in ids}


class SnapshotLoader:
    """Loads the snapshot; keep one between rounds so that each costs O(what changed).

    Every round reads three narrow scans (ready nodes' versions, active replicas' desired
    state, live jobs' scalar columns) and compares them with last round's as sets, at C
    speed; only the rows in the difference are looked at in Python, or loaded whole.
    """

    def __init__(self) -> None:
        self._node_rows: frozenset[Any] = frozenset()  # (id, version) of ready nodes
        self._replica_rows: frozenset[Any] = frozenset()  # (id, desired) of active replicas
        self._job_rows: frozenset[Any] = frozenset()  # (id, version) of live jobs
        self._bases: dict[str, NodeState] = {}  # ready node id -> its NodeState, no usage
        self._order: list[str] = []  # ready node ids, sorted
        self._states: dict[str, NodeState] = {}  # ready node id -> NodeState with usage
        self._nodes: tuple[NodeState, ...] = ()
        self._names: dict[str, str] = {}  # ready node name -> id
        self._facts: dict[str, ReplicaFacts] = {}  # active replica id -> facts
        self._desired: dict[str, str] = {}  # active replica id -> run | stop
        self._held: dict[str, set[str]] = {}  # node id -> its active replica ids
        self._by_job: dict[str, set[str]] = {}  # job id -> its active replica ids
        self._live: dict[str, LiveJob] = {}
        self._ended: dict[str, tuple[int, int | None]] = {}  # ended job -> attempt, port
        self._pending: dict[str, PendingEntry] = {}
        self._running: dict[str, RunningJob] = {}
        self._models: frozenset[str] | None = None  # GPU models the fleet has ever had

    def load(self, session: Session, now: float) -> Loaded:
        node_rows = _tuples(
            session,
            select(Node.id, Node.version).where(
                Node.condition == NodeCondition.READY, Node.connected.is_(True)
            ),
        )
        replica_rows = _tuples(
            session,
            select(Replica.id, Replica.desired).where(Replica.state.in_(ACTIVE_REPLICA_STATES)),
        )
        job_rows = _tuples(
            session, select(Job.id, Job.version).where(Job.state.in_(LIVE_JOB_STATES))
        )
        workspaces: dict[str, str] = {
            i: name for i, name in session.execute(select(Workspace.id, Workspace.name))
        }
        changed_nodes, fleet_changed = self._update_nodes(session, node_rows)
        touched_nodes, touched_jobs = self._update_replicas(session, replica_rows)
        touched_jobs |= self._update_jobs(session, job_rows)
        for job_id in touched_jobs:  # a new attempt moves the rendezvous port
            for replica_id in self._by_job.get(job_id, ()):
                touched_nodes.add(self._facts[replica_id].node_id)
        touched_nodes |= changed_nodes
        if fleet_changed or touched_nodes:
            self._restate(session, touched_nodes)
        nodes_changed = fleet_changed or bool(changed_nodes)
        if nodes_changed:
            self._names = {n.name: n.id for n in self._bases.values()}
        names = self._names
        self._update_running(session, touched_jobs, workspaces)
        self._update_pending(session, touched_jobs, workspaces, names, now, nodes_changed)
        quotas: dict[str, dict[str, int]] = {}
        for workspace_id, model, gpus in session.execute(
            select(Quota.workspace_id, Quota.gpu_model, Quota.gpus)
        ):
            quotas.setdefault(workspaces[workspace_id], {})[model] = gpus
        pending = tuple(e.job for e in self._pending.values())
        if self._models is None:  # once: lost and cordoned nodes' models count too
            self._models = fleet_models(session)
        if nodes_changed:
            self._models |= {g.model for n in self._bases.values() for g in n.gpus}
        return Loaded(
            Snapshot(self._nodes, pending, tuple(self._running.values()), quotas, self._models),
            dict(self._live),
            {i: e.spec for i, e in self._pending.items()},
        )

    def _again(self, job_id: str) -> None:
        """Look at this job again next round, as if its row had changed."""
        self._job_rows = frozenset(r for r in self._job_rows if r[0] != job_id)

    # --- nodes ------------------------------------------------------------------------

    def _update_nodes(self, session: Session, rows: frozenset[Any]) -> tuple[set[str], bool]:
        """Bring the ready nodes' static parts up to date; returns the ids of nodes new or
        changed, and whether the set of ready nodes changed."""
        if rows == self._node_rows:
            return set(), False
        # Only the differences are walked in Python; the sets compare at C speed.
        now_ids = {node_id for node_id, _ in rows - self._node_rows}
        gone = False
        for node_id, _ in self._node_rows - rows:
            if node_id not in now_ids:
                self._bases.pop(node_id, None)
                self._states.pop(node_id, None)
                gone = True
        changed = {node_id for node_id, _ in rows - self._node_rows}
        added = bool(changed - self._bases.keys())
        for chunk in in_chunks(sorted(changed)):
            for node in session.scalars(select(Node).where(Node.id.in_(chunk))):
                self._bases[node.id] = node_base(node)
        self._node_rows = rows
        if gone or added:
            self._order = sorted(self._bases)
        return changed, gone or added

    def _restate(self, session: Session, touched: set[str]) -> None:
        """Recompute the usage of the nodes touched."""
        todo = touched & self._bases.keys()
        rank0 = [
            self._facts[r]
            for node_id in todo
            for r in self._held.get(node_id, ())
            if self._facts[r].rank == 0
        ]
        ports = self._ports(session, rank0)
        states = self._states
        for node_id in todo:
            base = self._bases[node_id]
            on_node = [self._facts[r] for r in self._held.get(node_id, ())]
            states[node_id] = dataclasses.replace(
                base,
                used_gpus=frozenset(i for f in on_node for i in f.gpus),
                used_cpus=sum(f.cpus for f in on_node),
                used_memory_mb=sum(f.memory_mb for f in on_node),
                used_disk_mb=sum(f.disk_mb for f in on_node),
                # The host's listening ports (in the base) and corral's rendezvous ports.
                used_ports=base.used_ports | ports.get(node_id, frozenset()),
            )
        self._nodes = tuple(states[i] for i in self._order)

    def _ports(self, session: Session, rank0: list[ReplicaFacts]) -> dict[str, frozenset[int]]:
        """Rendezvous ports held per node: the master port of each current attempt's rank 0."""
        # A job that ended while a replica of it still stops holds its port until then.
        missing = [
            f.job_id for f in rank0 if f.job_id not in self._live and f.job_id not in self._ended
        ]
        for chunk in in_chunks(missing):
            for job_id, attempt, port in session.execute(
                select(Job.id, Job.attempt, Job.master_port).where(Job.id.in_(chunk))
            ):
                self._ended[job_id] = (attempt, port)
        ports: dict[str, set[int]] = {}
        for f in rank0:
            live = self._live.get(f.job_id)
            # Not found at all: deleted since the scan (READ COMMITTED), so it holds nothing.
            attempt, port = (
                (live.attempt, live.master_port) if live else self._ended.get(f.job_id, (0, None))
            )
            if port is not None and attempt == f.attempt:
                ports.setdefault(f.node_id, set()).add(port)
        return {node_id: frozenset(p) for node_id, p in ports.items()}

    # --- replicas ---------------------------------------------------------------------

    def _update_replicas(self, session: Session, rows: frozenset[Any]) -> tuple[set[str], set[str]]:
        """Take in replicas started, stopped or told to stop; returns the node ids and the
        job ids they touch."""
        nodes: set[str] = set()
        jobs: set[str] = set()
        if rows == self._replica_rows:
            return nodes, jobs
        added = rows - self._replica_rows
        added_ids = {replica_id for replica_id, _ in added}
        for replica_id, _ in self._replica_rows - rows:
            if replica_id in added_ids:
                continue  # its desired state changed: updated below
            f = self._facts.pop(replica_id)
            del self._desired[replica_id]
            self._held[f.node_id].discard(replica_id)
            self._by_job[f.job_id].discard(replica_id)
            if not self._by_job[f.job_id]:
                del self._by_job[f.job_id]
                self._ended.pop(f.job_id, None)
            nodes.add(f.node_id)
            jobs.add(f.job_id)
        new = [replica_id for replica_id, _ in added if replica_id not in self._facts]
        for chunk in in_chunks(new):
            for r in session.execute(
                select(
                    Replica.id,
                    Replica.node_id,
                    Replica.job_id,
                    Replica.attempt,
                    Replica.rank,
                    Replica.gpus,
                    Replica.cpus,
                    Replica.memory_mb,
                    Replica.disk_mb,
                    Replica.created_at,
                ).where(Replica.id.in_(chunk))
            ):
                self._facts[r.id] = ReplicaFacts(
                    r.node_id,
                    r.job_id,
                    r.attempt,
                    r.rank,
                    tuple(r.gpus),
                    r.cpus,
                    r.memory_mb,
                    r.disk_mb,
                    r.created_at,
                )
                self._held.setdefault(r.node_id, set()).add(r.id)
                self._by_job.setdefault(r.job_id, set()).add(r.id)
        for replica_id, desired in added:
            found = self._facts.get(replica_id)
            if found is None:  # deleted since the scan (READ COMMITTED): not there next round
                rows = rows - {(replica_id, desired)}
                continue
            self._desired[replica_id] = desired
            nodes.add(found.node_id)
            jobs.add(found.job_id)
        self._replica_rows = rows
        return nodes, jobs

    # --- jobs -------------------------------------------------------------------------

    def _update_jobs(self, session: Session, rows: frozenset[Any]) -> set[str]:
        """Take in the live jobs' versions, and the columns of those new or changed;
        returns the ids of jobs new, changed or gone."""
        if rows == self._job_rows:
            return set()
        changed: set[str] = set()
        fresh = {job_id for job_id, _ in rows - self._job_rows}
        for job_id, _ in self._job_rows - rows:
            changed.add(job_id)
            if job_id not in fresh:
                del self._live[job_id]
        changed |= fresh
        for chunk in in_chunks(sorted(fresh)):
            for row in session.execute(select(*LIVE_COLUMNS).where(Job.id.in_(chunk))):
                self._live[row[0]] = LiveJob(*row)
        ended = {
            job_id
            for job_id in fresh
            if job_id not in self._live or self._live[job_id].state not in LIVE_JOB_STATES
        }
        if ended:  # gone or ended since the scan (READ COMMITTED): looked at again next round
            for job_id in ended:
                self._live.pop(job_id, None)
            rows = frozenset(r for r in rows if r[0] not in ended)
        self._job_rows = rows
        return changed

    def _update_running(
        self, session: Session, touched: set[str], workspaces: Mapping[str, str]
    ) -> None:
        building: list[tuple[LiveJob, list[ReplicaFacts]]] = []
        for job_id in touched:
            self._running.pop(job_id, None)
            job = self._live.get(job_id)
            if (
                job is None
                or job.state not in (JobState.STARTING, JobState.RUNNING)
                or job.attempt <= 0
            ):
                continue
            current = [
                r for r in self._by_job.get(job_id, ()) if self._facts[r].attempt == job.attempt
            ]
            # A replica already told to stop is on its way out: not a victim to pick again.
            if current and all(self._desired[r] == Desired.RUN for r in current):
                building.append((job, [self._facts[r] for r in current]))
        specs = specs_by_id(session, [job.id for job, _ in building])
        for job, held in building:
            spec = specs.get(job.id)
            if spec is None:  # deleted since the scan (READ COMMITTED)
                self._again(job.id)
                continue
            held.sort(key=lambda f: f.rank)
            started = job.started_at
            if started is None:
                started = min(f.created_at for f in held)
            self._running[job.id] = RunningJob(
                id=job.id,
                workspace=workspaces[job.workspace_id],
                priority=job.priority,
                preemptible=spec.preemptible,
                demand=demand_of(spec),
                replicas=tuple(ReplicaPlacement(f.rank, f.node_id, f.gpus) for f in held),
                started_at=started,
                expected_end=None if spec.max_runtime is None else started + spec.max_runtime,
            )

    def _update_pending(
        self,
        session: Session,
        touched: set[str],
        workspaces: Mapping[str, str],
        names: Mapping[str, str],
        now: float,
        nodes_changed: bool,
    ) -> None:
        load: list[str] = []
        for job_id in touched:
            self._pending.pop(job_id, None)
            job = self._live.get(job_id)
            if job is not None and job.state == JobState.PENDING:
                load.append(job_id)
        specs = specs_by_id(session, load)
        for chunk in in_chunks(load):
            for row in session.execute(PENDING_COLUMNS.where(Job.id.in_(chunk))):
                spec = specs.get(row.id)
                if spec is not None:
                    self._pending[row.id] = pending_entry(row, spec, workspaces, names, now)
        for job_id in load:
            if job_id not in self._pending:  # deleted since the scan (READ COMMITTED)
                self._again(job_id)
        for job_id, entry in self._pending.items():
            # Exclusions expire with time, and name nodes that come and go.
            if entry.excluded and (nodes_changed or job_id not in load):
                excluded = excluded_now(entry.excluded, names, now)
                if excluded != entry.job.excluded_nodes:
                    self._pending[job_id] = dataclasses.replace(
                        entry, job=dataclasses.replace(entry.job, excluded_nodes=excluded)
                    )


def _tuples(session: Session, statement: Executable) -> frozenset[tuple[Any, ...]]:
    """The rows as the driver gives them, plain tuples: a round compares thousands of them
    with last round's as sets, which plain tuples do at C speed (SQLAlchemy's Row objects
    would compare in Python). Only columns without result processing may be selected
    (strings, numbers)."""
    result = session.connection().execute(statement)
    try:
        return frozenset(result.cursor.fetchall())
    finally:
        result.close()
