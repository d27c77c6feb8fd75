"""Scheduler: rounds for a long-lived caller, each costing O(what changed), not O(fleet).

The server's scheduler controller and the simulator schedule the same fleet round after
round. A Scheduler keeps the fleet index and the running set between rounds and brings
them up to each new snapshot by its differences (see index.py and running.py). The plans
are exactly those of `place()` on the same snapshot; only the cost differs.
"""

from __future__ import annotations

from corral.core.placement import PlacementPlan, Snapshot
from corral.core.scheduler.config import SchedulerConfig
from corral.core.scheduler.index import FleetIndex
from corral.core.scheduler.pipeline import Round
from corral.core.scheduler.running import RunningSet


class Scheduler:
    """Keeps what a round starts from between rounds; one round at a time.

    Nodes and running jobs that are the same objects as last round are not looked at
    again, so a caller should hand over the same NodeState/RunningJob objects for what did
    not change (frozen dataclasses: the same object is the same value).
    """

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self._index: FleetIndex | None = None
        self._running = RunningSet()

    def round(self, snapshot: Snapshot, now: float) -> Round:
        if self._index is None:
            index = FleetIndex(snapshot.nodes)
        else:
            index = self._index.refresh(snapshot.nodes)
        if index is not self._index:  # holdings point at node positions of the old index
            self._running = RunningSet()
        self._index = index
        self._running.update(snapshot.running, index)
        return Round(snapshot, now, self.config, index, self._running)

    def place(self, snapshot: Snapshot, now: float) -> PlacementPlan:
        return self.round(snapshot, now).run()
