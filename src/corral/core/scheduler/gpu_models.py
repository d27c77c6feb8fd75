"""GPU models: whether a request names one, and whether the fleet has ever had it. Pure.

One matching rule for the whole scheduler: a requested type matches a GPU whose model
contains it, case-insensitively (`H100` matches `NVIDIA H100 80GB HBM3`), as in quotas.

A request for a model that no node of the fleet has ever had (`--gpus banana`) is almost
surely a typo, not a wait for capacity: it is accepted, since such a node may join later,
but the submitter is told at once which models the fleet has, instead of a job that
waits without end. "Ever had" is every node the store knows, lost and cordoned ones too.
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.core.scheduler import reasons


def matches(want: str, model: str) -> bool:
    return want.upper() in model.upper()


def never_had(want: str | None, fleet_models: Iterable[str]) -> str | None:
    """Why no node of the fleet has ever had the asked GPU model; None when one has (or
    when no model was asked for)."""
    if not want:
        return None
    models = sorted(set(fleet_models))
    if any(matches(want, m) for m in models):
        return None
    return reasons.NEVER_HAD_MODEL.format(what=want, models=", ".join(models) or "none yet")
