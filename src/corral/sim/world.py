"""The world's bookkeeping: who holds which GPUs, the queue, and the scheduler's snapshot.

Every change to a node or a job goes through here, so the totals (GPUs used, queued,
arrived, up), the cached views and the accounting of GPU time always agree.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from corral.core.placement import GangPlacement, NodeState, PendingJob, RunningJob, Snapshot
from corral.sim.cluster import Cluster
from corral.sim.state import JobRun, job_runs, node_runs
from corral.sim.workload import Job


@dataclass
class Counters:
    rounds: int = 0
    preemptions: int = 0
    node_failures: int = 0
    interrupted_attempts: int = 0  # attempts ended by a node failure
    allocated_gpu_s: float = 0.0
    lost_gpu_s: float = 0.0
    allocated_cost: float = 0.0
    failures_by_cause: Counter[str] = field(default_factory=Counter)
    last_activity: float = 0.0  # last time a job started, ended or was interrupted


class World:
    def __init__(
        self,
        cluster: Cluster,
        jobs: list[Job],
        checkpoint_s: float | None,
        absent: Iterable[int] = (),
    ) -> None:
        self.cluster = cluster
        self.checkpoint_s = checkpoint_s
        self.nodes = node_runs(cluster)
        self.node_index = {n.spec.id: i for i, n in enumerate(self.nodes)}
        self.jobs = job_runs(jobs)
        self.job_by_id = {r.job.id: r for r in self.jobs}
        if len(self.job_by_id) != len(self.jobs):
            raise ValueError("job ids must be unique")
        # The queue in FIFO order: submit time, then order in the workload. Arrivals come
        # in that order; a requeued job is put back in its place.
        self.pending: dict[int, PendingJob] = {}
        self.running: dict[int, RunningJob] = {}
        self.node_views: list[NodeState | None] = [n.state() for n in self.nodes]
        self.stale: set[int] = set()  # nodes whose view must be rebuilt before a snapshot
        self.changed: set[int] = set(range(len(self.nodes)))  # for fragmentation sampling
        self._checkpoints: list[tuple[float, int, int]] = []  # (view stale at, job, attempt)
        self.counters = Counters()
        self.used_gpus = 0
        self.up_gpus = cluster.total_gpus
        self.queued_gpus = 0
        self.arrived_gpus = 0
        self.down = 0
        self.settled = 0  # jobs done or dropped: for progress
        # Nodes not in the fleet now: a pool's slots with no instance (autoscaled runs).
        # Unlike `down`, not a failure: nothing waits for them to come back.
        self.absent: set[int] = set()
        for i in absent:
            self.leave(i)

    # --- the scheduler's view ------------------------------------------------------------

    def snapshot(self, now: float) -> Snapshot:
        for i in self.stale:
            n = self.nodes[i]
            n.view = None
            self.node_views[i] = n.state() if n.up else None
        self.stale.clear()
        # Running jobs whose newest checkpoint moved on since their view was made.
        while self._checkpoints and self._checkpoints[0][0] <= now:
            _, j, attempt = heapq.heappop(self._checkpoints)
            run = self.jobs[j]
            if run.state == "running" and run.attempt == attempt:
                self.running[j] = run.running(now, self.checkpoint_s)
                self._watch_checkpoint(run)
        if self.down or self.absent:
            nodes = tuple(v for v in self.node_views if v is not None)
        else:  # no node is down, so every view is set: copy the list at C speed
            nodes = cast(tuple[NodeState, ...], tuple(self.node_views))
        return Snapshot(
            nodes=nodes,
            pending=tuple(self.pending.values()),
            running=tuple(self.running.values()),
            quotas=self.cluster.quotas,
        )

    def _watch_checkpoint(self, run: JobRun) -> None:
        if run.running_view_until < math.inf:
            heapq.heappush(self._checkpoints, (run.running_view_until, run.index, run.attempt))

    def _touch(self, index: int) -> None:
        self.stale.add(index)
        self.changed.add(index)

    # --- jobs ----------------------------------------------------------------------------

    def arrive(self, run: JobRun) -> None:
        run.state = "pending"
        self.pending[run.index] = run.pending()
        self.queued_gpus += run.job.total_gpus
        self.arrived_gpus += run.job.total_gpus

    def start(self, run: JobRun, gang: GangPlacement, now: float) -> None:
        d = run.demand
        rate = 0.0
        for r in gang.replicas:
            i = self.node_index[r.node_id]
            node = self.nodes[i]
            node.used_gpus.update(r.gpus)
            node.used_cpus += d.cpus
            node.used_memory_mb += d.memory_mb
            node.used_disk_mb += d.disk_mb
            node.jobs.add(run.index)
            self._touch(i)
            rate += node.spec.price_per_gpu_hour * d.gpus / 3600
        self.nodes[self.node_index[gang.replicas[0].node_id]].ports.add(gang.master_port)
        del self.pending[run.index]
        self.queued_gpus -= run.job.total_gpus
        self.used_gpus += run.job.total_gpus
        run.state = "running"
        run.attempt += 1
        run.started_at = now
        run.gang = gang
        run.price_per_gpu_s = rate
        run.running_view = None
        run.running_view_until = math.inf
        if run.first_start is None:
            run.first_start = now
        self.running[run.index] = run.running(now, self.checkpoint_s)
        self._watch_checkpoint(run)
        self.counters.last_activity = now

    def _stop(self, run: JobRun, now: float) -> float:
        """Release the gang's resources, account its GPU time; returns the attempt's length."""
        assert run.gang is not None
        elapsed = now - run.started_at
        d = run.demand
        for r in run.gang.replicas:
            i = self.node_index[r.node_id]
            node = self.nodes[i]
            node.used_gpus.difference_update(r.gpus)
            node.used_cpus -= d.cpus
            node.used_memory_mb -= d.memory_mb
            node.used_disk_mb -= d.disk_mb
            node.jobs.discard(run.index)
            if not node.jobs:
                node.idle_since = now
            self._touch(i)
        self.nodes[self.node_index[run.gang.replicas[0].node_id]].ports.discard(
            run.gang.master_port
        )
        del self.running[run.index]
        self.used_gpus -= run.job.total_gpus
        self.counters.allocated_gpu_s += elapsed * run.job.total_gpus
        self.counters.allocated_cost += elapsed * run.price_per_gpu_s
        self.counters.last_activity = now
        run.gang = None
        run.running_view = None
        return elapsed

    def complete(self, run: JobRun, now: float) -> None:
        self._stop(run, now)
        run.remaining_s = 0.0
        run.state = "done"
        run.finished_at = now
        self.settled += 1

    def interrupt(self, run: JobRun, now: float) -> None:
        """End the attempt; the job goes back to the queue from its last checkpoint."""
        elapsed = self._stop(run, now)
        interval = self.checkpoint_s
        saved = elapsed // interval * interval if interval else 0.0
        self.counters.lost_gpu_s += (elapsed - saved) * run.job.total_gpus
        run.remaining_s = max(0.0, run.remaining_s - saved)
        if saved > 0:
            run.last_checkpoint_at = run.started_at + saved
        run.state = "pending"
        run.pending_view = None  # its remaining runtime estimate changed
        self._requeue(run)
        self.queued_gpus += run.job.total_gpus

    def _requeue(self, run: JobRun) -> None:
        last = next(reversed(self.pending), None)
        self.pending[run.index] = run.pending()
        if last is not None and self._order(last) > self._order(run.index):
            # Rare (a preemption or a failure): re-sort rather than keep a sorted structure.
            self.pending = dict(sorted(self.pending.items(), key=lambda kv: self._order(kv[0])))

    def _order(self, index: int) -> tuple[float, int]:
        return (self.jobs[index].job.submit_s, index)

    def drop_pending(self) -> None:
        for j in self.pending:
            self.jobs[j].state = "dropped"
        self.settled += len(self.pending)
        self.queued_gpus = 0
        self.pending.clear()

    # --- nodes ---------------------------------------------------------------------------

    def node_down(self, index: int, now: float) -> int:
        """Take a node down, ending the attempts on it; returns how many were ended."""
        node = self.nodes[index]
        victims = sorted(node.jobs)
        for j in victims:
            self.interrupt(self.jobs[j], now)
        node.up = False
        self.down += 1
        self.up_gpus -= len(node.slots)
        self._touch(index)
        return len(victims)

    def node_up(self, index: int) -> None:
        node = self.nodes[index]
        node.up = True
        self.down -= 1
        self.up_gpus += len(node.slots)
        self._touch(index)

    def join(self, index: int, now: float) -> None:
        """A pool's node joins the fleet (its instance booted), idle."""
        node = self.nodes[index]
        self.absent.discard(index)
        node.up = True
        node.idle_since = now
        self.up_gpus += len(node.slots)
        self._touch(index)

    def leave(self, index: int) -> None:
        """A pool's node leaves the fleet (released, or never launched). It holds no work."""
        node = self.nodes[index]
        assert not node.jobs, f"node {node.spec.id} leaves with work on it"
        if node.up:
            self.up_gpus -= len(node.slots)
        node.up = False
        self.absent.add(index)
        self._touch(index)
