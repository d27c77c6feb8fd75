"""The scheduler: filter -> score -> gang place -> preempt -> backfill. See README.md."""

from corral.core.priorities import DEFAULT_PRIORITY_CLASSES
from corral.core.scheduler.config import (
    Level,
    Reclaim,
    SchedulerConfig,
)
from corral.core.scheduler.incremental import Scheduler
from corral.core.scheduler.pipeline import Round
from corral.core.scheduler.scores import fragmentation, fragmentation_counts

__all__ = [
    "DEFAULT_PRIORITY_CLASSES",
    "Level",
    "Reclaim",
    "Round",
    "Scheduler",
    "SchedulerConfig",
    "fragmentation",
    "fragmentation_counts",
]
