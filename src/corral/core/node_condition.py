"""A node's condition from what decides it: liveness (lost), its health checks (unhealthy),
and an operator's or recovery's cordon. Pure.

```
 lost ─────────────────────────────► lost        (liveness decides; a hello ends it)
 checks say it takes no work ──────► unhealthy   (reboot, inspect, a full checkpoint disk)
 cordoned (a reason is kept) ──────► cordoned
 otherwise ────────────────────────► ready
```

So a node whose checks pass again goes back to what it was before they failed: cordoned if
someone had cordoned it, else ready.
"""

from __future__ import annotations

from corral.core.states import NodeCondition


def condition_of(*, lost: bool, takes_work: bool, cordoned: bool) -> NodeCondition:
    if lost:
        return NodeCondition.LOST
    if not takes_work:
        return NodeCondition.UNHEALTHY
    return NodeCondition.CORDONED if cordoned else NodeCondition.READY
