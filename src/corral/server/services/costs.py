"""What GPUs cost: per job and per workspace, GPU-hours x the node's price per GPU-hour.

A node's price is, first, what its pool paid when it launched it (the instance row keeps
the price of the day), then its pool's price now (the pool's own, else the catalog's),
then a `price-per-hour` label an operator set on a node outside any pool. A node with none
of these has no known price: its GPU-hours are counted, and the cost is not shown as if
they were free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from corral.core.states import ACTIVE_REPLICA_STATES
from corral.providers.catalog import Catalog
from corral.server.store.tables import Job, Node, Pool, PoolInstance, Replica, Workspace
from corral.spec.pool import NodePoolSpec
from corral.wire.pools import CostView, WorkspaceUsage

PRICE_LABEL = "price-per-hour"
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Run:
    """One replica's hold on GPUs: how many, on which node, from when to when."""

    node_id: str
    gpus: int
    started_at: float
    ended_at: float


@dataclass
class Tally:
    gpu_seconds: float = 0.0
    usd: float = 0.0
    unpriced_gpu_seconds: float = 0.0

    def add(self, run: Run, per_gpu_hour: float | None, since: float | None = None) -> None:
        start = run.started_at if since is None else max(run.started_at, since)
        seconds = max(0.0, run.ended_at - start) * run.gpus
        self.gpu_seconds += seconds
        if per_gpu_hour is None:
            self.unpriced_gpu_seconds += seconds
        else:
            self.usd += seconds / SECONDS_PER_HOUR * per_gpu_hour

    def view(self) -> CostView:
        return CostView(
            gpu_hours=round(self.gpu_seconds / SECONDS_PER_HOUR, 4),
            usd=None if self.unpriced_gpu_seconds > 0 else round(self.usd, 4),
            unpriced_gpu_hours=round(self.unpriced_gpu_seconds / SECONDS_PER_HOUR, 4),
        )


def node_price(pool: NodePoolSpec, catalog: Catalog) -> float | None:
    """A pool's USD per node-hour now: its own price, else the catalog's; None: unknown."""
    if pool.price is not None:
        return pool.price
    return catalog.price(pool.provider, pool.region, pool.type, pool.spot)


def price_per_node_hour(
    labels: dict[str, str],
    launched_price: float | None,
    pool: NodePoolSpec | None,
    catalog: Catalog,
) -> float | None:
    """A node's USD per hour as the rules above say, or None."""
    if launched_price is not None:
        return launched_price
    if pool is not None:
        return node_price(pool, catalog)
    raw = labels.get(PRICE_LABEL)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def _launch_prices(session: Session, nodes: Sequence[Node]) -> dict[str, float | None]:
    """Node id -> the price its pool launched it at. By the node's id: a deleted node's row
    is renamed (and its pool may be gone), its id stays. Instance rows from before the id
    was recorded are found by the node's name while it lives."""
    ids = [n.id for n in nodes]
    found = {
        i.node_id: i.price_per_hour
        for i in session.scalars(select(PoolInstance).where(PoolInstance.node_id.in_(ids)))
        if i.node_id is not None
    }
    by_name = {n.name: n.id for n in nodes if n.id not in found}
    if by_name:
        query = select(PoolInstance).where(
            PoolInstance.node_id.is_(None), PoolInstance.node_name.in_(list(by_name))
        )
        for i in session.scalars(query):
            found[by_name[i.node_name]] = i.price_per_hour
    return found


def gpu_hour_prices(
    session: Session, node_ids: Iterable[str], catalog: Catalog
) -> dict[str, float | None]:
    """Node id -> USD per GPU-hour (None: unknown, or the node has no GPUs)."""
    ids = sorted(set(node_ids))
    if not ids:
        return {}
    nodes = list(session.scalars(select(Node).where(Node.id.in_(ids))))
    launched = _launch_prices(session, nodes)
    pools = {p.name: NodePoolSpec.model_validate(p.spec) for p in session.scalars(select(Pool))}
    out: dict[str, float | None] = {}
    for node in nodes:
        labels = dict(node.labels or {})
        pool = pools.get(labels.get("pool", ""))
        per_node = price_per_node_hour(labels, launched.get(node.id), pool, catalog)
        gpus = len(node.gpus or [])
        out[node.id] = None if per_node is None or gpus == 0 else per_node / gpus
    return out


def _run(replica: Replica, now: float) -> Run | None:
    if replica.started_at is None or not replica.gpus:
        return None
    if replica.finished_at is not None:
        ended = replica.finished_at
    elif replica.state in ACTIVE_REPLICA_STATES:
        ended = now
    else:
        return None  # ended without a recorded end: nothing to charge
    return Run(replica.node_id, len(replica.gpus), replica.started_at, ended)


def job_cost(session: Session, job: Job, catalog: Catalog, now: float) -> CostView | None:
    """Every attempt's GPUs; None when it has held none (nothing to show)."""
    runs = [
        run
        for r in session.scalars(select(Replica).where(Replica.job_id == job.id))
        if (run := _run(r, now)) is not None
    ]
    if not runs:
        return None
    prices = gpu_hour_prices(session, (r.node_id for r in runs), catalog)
    tally = Tally()
    for run in runs:
        tally.add(run, prices.get(run.node_id))
    return tally.view()


def workspace_usage(
    session: Session,
    workspaces: Sequence[Workspace],
    catalog: Catalog,
    since: float,
    now: float,
) -> list[WorkspaceUsage]:
    """GPU-hours and cost of each workspace's work between `since` and `now`."""
    ids = [w.id for w in workspaces]
    rows = session.execute(
        select(Replica, Job.workspace_id)
        .join(Job, Job.id == Replica.job_id)
        .where(
            Job.workspace_id.in_(ids),
            Replica.started_at.is_not(None),
            or_(Replica.finished_at.is_(None), Replica.finished_at >= since),
        )
    ).all()
    runs: dict[str, list[tuple[Run, str]]] = {}
    for replica, workspace_id in rows:
        run = _run(replica, now)
        if run is not None:
            runs.setdefault(workspace_id, []).append((run, replica.job_id))
    prices = gpu_hour_prices(
        session, (run.node_id for held in runs.values() for run, _ in held), catalog
    )
    out: list[WorkspaceUsage] = []
    for ws in workspaces:
        tally = Tally()
        held = runs.get(ws.id, [])
        for run, _ in held:
            tally.add(run, prices.get(run.node_id), since)
        cost = tally.view()
        out.append(
            WorkspaceUsage(
                workspace=ws.name,
                since=since,
                gpu_hours=cost.gpu_hours,
                usd=cost.usd,
                unpriced_gpu_hours=cost.unpriced_gpu_hours,
                jobs=len({job for _, job in held}),
            )
        )
    return out
