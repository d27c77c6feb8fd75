"""SchedulerConfig: priority classes and the few knobs a fleet operator may turn."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.core.placement import FIRST_MASTER_PORT
from corral.core.priorities import DEFAULT_PRIORITY_CLASSES


class Level(enum.IntEnum):
    """Topology domains, smallest first. A gang prefers the smallest that holds it."""

    NODE = 0
    RACK = 1  # one NVLink domain (e.g. an NVL72)
    ZONE = 2
    REGION = 3
    PROVIDER = 4
    ANY = 5  # across providers: only when a job asks for it

    @property
    def word(self) -> str:
        return self.name.lower()


class Reclaim(enum.Enum):
    """Which borrowers an owner may evict to get its guaranteed quota back."""

    NEVER = "never"
    LOWER_PRIORITY = "lower-priority"  # the strict rule: priority always wins
    # Default: a guarantee holds between equal-priority teams (the common case: everyone
    # submits `train`); a higher-priority borrower still keeps its GPUs.
    LOWER_OR_EQUAL_PRIORITY = "lower-or-equal-priority"


@dataclass(frozen=True)
class SchedulerConfig:
    # Named priorities; PendingJob.priority holds the resolved int (see priority_of).
    priority_classes: Mapping[str, int] = field(default_factory=lambda: DEFAULT_PRIORITY_CLASSES)
    # The widest domain a gang may span when its spec does not say (never across regions).
    max_spread: Level = Level.REGION
    preemption: bool = True
    reclaim: Reclaim = Reclaim.LOWER_OR_EQUAL_PRIORITY
    # EASY backfill: one reservation for the first blocked job in queue order.
    backfill: bool = True
    # Dominant-resource fair share between workspaces of equal priority.
    fair_share: bool = True
    # Bounds the work of one preemption attempt (victims considered, cheapest first).
    max_victims_considered: int = 4096
    first_master_port: int = FIRST_MASTER_PORT

    def priority_of(self, name: str) -> int:
        """The int for a priority class name; a user-facing error names the choices."""
        try:
            return self.priority_classes[name]
        except KeyError:
            known = ", ".join(sorted(self.priority_classes, key=self.priority_classes.__getitem__))
            raise ValueError(f"unknown priority class {name!r}; expected one of {known}") from None
