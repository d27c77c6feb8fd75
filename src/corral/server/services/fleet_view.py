"""The fleet as the console's fleet page reads it, in a few queries whatever its size.

```
 nodes.node_views ─► every node's view: condition, GPUs (allocated, health), labels  (2 queries)
 active replicas  ─► what runs on each node, named only where the caller may see it  (1 query)
 health_signals   ─► each GPU's last reported utilization (cluster admins)          (1 query)
 costs            ─► each node's price per hour (launch price, pool, label)        (≤ 4 queries)
```

A workspace's token learns how many replicas of other workspaces share a node, never
their names (as services/node_detail shows it its own workloads only). The last report's
signals go to cluster admins only, as `GET /v1/nodes/{name}` gives them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.providers.catalog import Catalog
from corral.server.auth import Principal
from corral.server.errors import NotFound
from corral.server.services import node_ops
from corral.server.services.costs import PRICE_LABEL, gpu_hour_prices
from corral.server.services.nodes import node_view, node_views
from corral.server.store.tables import Endpoint, Job, Node, Pod, Replica, Workspace
from corral.wire.api import NodeView

POOL_LABEL = "pool"
PATH_GPUS = 16  # up to this many GPUs a node, utilization is picked out in SQL


@dataclass(frozen=True)
class Running:
    """One replica on a node that the caller may see."""

    workspace: str
    name: str  # the job's, the endpoint's or the pod's name: its page's
    kind: str  # job, endpoint, pod
    job: str  # the replica's job (an endpoint's or a pod's own job has a name of its own)
    rank: int
    gpus: tuple[int, ...]
    state: str


@dataclass(frozen=True)
class NodeFacts:
    view: NodeView
    running: list[Running] = field(default_factory=list)
    # Replicas of workspaces the caller may not see: counted, never named.
    hidden: int = 0
    # GPU index -> utilization in percent, as last reported (cluster admins only).
    utilization: dict[int, float] = field(default_factory=dict)
    price_per_hour: float | None = None


def fleet(
    session: Session, caller: Principal, now: float, catalog: Catalog, node: str | None = None
) -> list[NodeFacts]:
    """Every node (or only `node`, by name: NotFound if there is none) as the caller sees it."""
    if node is None:
        views = node_views(session, now)
    else:
        row = node_ops.node_named(session, node)
        if row is None:
            raise NotFound.of(f"node '{node}'")
        views = [node_view(session, row, now)]
    if not caller.cluster_admin:
        # Where the machines are is the operator's business (as /v1/nodes says).
        views = [v.model_copy(update={"address": None}) for v in views]
    ids = [v.id for v in views]
    one = ids if node is not None else None
    running, hidden = _running(session, caller, one)
    most = max((len(v.gpus) for v in views), default=0)
    use = _utilization(session, one, most) if caller.cluster_admin else {}
    # costs prices a node through its pool (a pool's nodes carry its name) or its price
    # label: only those are looked up (a hand-joined fleet has neither: no query at all).
    priced = [v.id for v in views if POOL_LABEL in v.labels or PRICE_LABEL in v.labels]
    per_gpu = gpu_hour_prices(session, priced, catalog)
    out: list[NodeFacts] = []
    for v in views:
        price = per_gpu.get(v.id)
        out.append(
            NodeFacts(
                view=v,
                running=running.get(v.id, []),
                hidden=hidden.get(v.id, 0),
                utilization=use.get(v.id, {}),
                price_per_hour=None if price is None else price * len(v.gpus),
            )
        )
    return out


def _running(
    session: Session, caller: Principal, node_ids: Iterable[str] | None
) -> tuple[dict[str, list[Running]], dict[str, int]]:
    query = (
        select(
            Replica.node_id,
            Job.workspace_id,
            Workspace.name,
            Job.name,
            Endpoint.name,
            Pod.name,
            Replica.rank,
            Replica.gpus,
            Replica.state,
        )
        .join(Job, Job.id == Replica.job_id)
        .join(Workspace, Workspace.id == Job.workspace_id)
        .outerjoin(Endpoint, Endpoint.id == Job.endpoint_id)
        .outerjoin(Pod, Pod.id == Job.pod_id)
        .where(Replica.state.in_(ACTIVE_REPLICA_STATES))
        .order_by(Workspace.name, Job.name, Replica.rank)
    )
    if node_ids is not None:
        query = query.where(Replica.node_id.in_(list(node_ids)))
    running: dict[str, list[Running]] = {}
    hidden: dict[str, int] = {}
    rows = session.execute(query)
    for node_id, ws_id, ws, job, endpoint, pod, rank, gpus, state in rows:
        if caller.workspace_id is not None and ws_id != caller.workspace_id:
            hidden[node_id] = hidden.get(node_id, 0) + 1
            continue
        kind, name = ("endpoint", endpoint) if endpoint else ("pod", pod) if pod else ("job", job)
        running.setdefault(node_id, []).append(
            Running(ws, name, kind, job, rank, tuple(gpus or ()), str(state))
        )
    return running, hidden


def _utilization(
    session: Session, node_ids: Iterable[str] | None, most_gpus: int
) -> dict[str, dict[int, float]]:
    """Node id -> GPU index -> utilization (percent) in the node's last report.

    The report is the biggest thing kept of a node (every signal of every GPU): for a fleet
    of nodes of up to PATH_GPUS GPUs, the database picks each GPU's index and utilization
    out of it (json_extract, #>>), and Python decodes none of it."""
    where = [Node.health_signals.is_not(None)]
    if node_ids is not None:
        where.append(Node.id.in_(list(node_ids)))
    out: dict[str, dict[int, float]] = {}
    if most_gpus <= PATH_GPUS:
        signals = Node.health_signals
        picks = [
            column
            for k in range(most_gpus)
            for column in (
                signals[("gpus", k, "index")].as_integer(),
                signals[("gpus", k, "utilization_pct")].as_float(),
            )
        ]
        for node_id, *values in session.execute(select(Node.id, *picks).where(*where)):
            pairs = zip(values[::2], values[1::2], strict=True)
            found = {i: u for i, u in pairs if i is not None and u is not None}
            if found:
                out[node_id] = found
        return out
    for node_id, report in session.execute(select(Node.id, Node.health_signals).where(*where)):
        found = {}
        for gpu in (report or {}).get("gpus", []):
            try:
                value = gpu.get("utilization_pct")
                if value is not None:
                    found[int(gpu["index"])] = float(value)
            except (AttributeError, KeyError, TypeError, ValueError):
                continue  # a report of another version: no figure rather than a wrong one
        if found:
            out[node_id] = found
    return out
