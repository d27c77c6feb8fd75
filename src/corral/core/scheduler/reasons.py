"""Reasons a user reads in `corral job get`: why a job is pending, or why it was stopped.

Constants and templates only, so a reason's wording lives in one place and tests can
refer to it. A pending job's reason is composed as: the blocking fact first, then what
preemption could or could not do, then the backfill reservation.
"""

from __future__ import annotations

# -- never fits as asked (Outcome.UNRESOLVABLE) -------------------------------------------
NO_REPLICAS = "needs at least 1 replica"
SPOT_ONLY = (
    "a non-preemptible job does not run on spot nodes (label spot=true: the cloud may "
    "reclaim them), and every ready node{matching} is one; mark it preemptible, add "
    "node_selector spot=true, or wait for an on-demand node"
)
UNKNOWN_TOPOLOGY = "unknown topology {topology!r}; expected one of: {levels}"
SELECTOR_MATCHES_NONE = "node_selector {selector} matches no ready node"
ALL_EXCLUDED = (
    "every ready node is excluded for this job ({count} failed it recently); waiting for "
    "another node"
)
NO_RUNTIME = (
    "image {image} needs a node with a container runtime (docker or podman){gpus}; "
    "{none} (see `corral node get`)"
)
NO_RUNTIME_GPUS = " that passes GPUs through"
NODE_TOO_SMALL = "needs {need} {unit} per replica; the largest ready node has {have}"
NO_SUCH_GPU = "no ready node has {what} GPUs{memory} (models here: {models})"
NEVER_HAD_MODEL = "no node of this fleet has ever had {what} GPUs; models: {models}"
REPLICA_TOO_BIG = "needs {gpus}×{what} per replica; the largest ready node has {have}"
GANG_TOO_BIG = (
    "needs {replicas}× {gpus} {what} in one {level}; "
    "the largest {level} holds {best} even when empty"
)
QUOTA_NEVER = (
    "workspace {workspace} is guaranteed {guarantee} {what} and the ready fleet leaves "
    "{pool} {what} unguaranteed; this non-preemptible job needs {need}: mark it "
    "preemptible to borrow idle GPUs"
)

# -- may fit later (Outcome.UNSCHEDULABLE) -----------------------------------------------
NO_NODES = "waiting for a ready node: none is connected and taking work (see `corral node ls`)"
NO_ROOM = "needs {replicas}× {gpus} {what} in one {level}; the freest {level} has {free} free"
NO_ROOM_CPU = "needs {replicas}× ({demand}) in one {level}; no {level} has room now"
SHORT_OF_OTHER = "; CPUs, memory or disk are short where those GPUs are free"
# Appended to a no-room reason when a non-preemptible job had spot nodes left out.
SPOT_LEFT_OUT = (
    "; {count} spot node{s} (spot=true) left out: a non-preemptible job runs on spot "
    "nodes only with node_selector spot=true"
)
RESERVED_EXCLUDED = "; nodes reserved for {head} are left out"
# A non-preemptible job beyond its guarantee and the unguaranteed pool: {own} and {pool}.
QUOTA_BLOCKED = (
    "{own} and {pool}; this non-preemptible job needs {need}: mark it preemptible to "
    "borrow idle GPUs"
)
QUOTA_NONE = "workspace {workspace} has no guarantee for {what}"
QUOTA_HELD = (
    "workspace {workspace} holds {held} of its {guarantee} guaranteed {what} with "
    "non-preemptible jobs"
)
QUOTA_EXHAUSTED = QUOTA_BLOCKED  # the name core/rollout.py recognises quota waits by
POOL_NONE = "guarantees cover all the ready fleet's {what}"
POOL_TAKEN = "the {pool} unguaranteed {what} are held by non-preemptible jobs"
POOL_SHORT = "only {free} of the {pool} unguaranteed {what} are free of non-preemptible jobs"
COULD_PREEMPT_BUT_QUOTA = (
    "; preempting {victims} lower-priority jobs would free GPUs, not guarantee, for "
    "workspace {workspace}"
)
PREEMPTION_WOULD_NOT_FIT = (
    "; preempting all {victims} lower-priority jobs in the way would still not make room"
)
RESERVED = (
    "; reserved: expected to start in {eta} on {where}, and smaller jobs backfill only if "
    "they end first"
)
NO_ESTIMATE = "; no start-time guarantee: the running jobs in its way have no max_runtime"

# -- why a running job is stopped (Preemption.reason) -------------------------------------
PREEMPTED_FOR_PRIORITY = "preempted for {job} (priority {priority} > {victim_priority})"
PREEMPTED_TO_RECLAIM = (
    "reclaimed for {job}: it ran on {what} borrowed beyond workspace {victim_workspace}'s "
    "guarantee, and workspace {workspace} needs its guarantee back"
)


def eta(seconds: float) -> str:
    """A short duration: 45s, 12m, 3h05m, 2d4h."""
    s = max(0, int(seconds + 0.5))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"
