"""Store-level test helpers: a node registered and connected through the services, and a
job's run on a node as the cost and pool tests need it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from corral.core import liveness as core_liveness
from corral.core.states import JobState
from corral.server.services import liveness, nodes
from corral.server.store.db import Store
from corral.server.store.tables import Job, Replica
from corral.wire import agent as wire


def register_node(
    store: Store,
    name: str,
    *,
    cpus: float = 4,
    memory_mb: int = 16000,
    gpus: int = 0,
    labels: dict[str, str] | None = None,
) -> str:
    """Register node `name` with `gpus` fake H100s and connect it; returns its id."""
    inventory = wire.Inventory(
        hostname=name,
        cpus=cpus,
        memory_mb=memory_mb,
        disk_mb=100000,
        gpu_backend="fake",
        labels=labels or {},
        gpus=[
            wire.Gpu(index=i, uuid=f"{name}-{i}", model="H100", memory_mb=81920)
            for i in range(gpus)
        ],
    )
    with store.transaction() as session:
        node, _ = nodes.register_node(
            session,
            wire.RegisterRequest(join_token="crj_join", name=name, inventory=inventory),
            1.0,
        )
        nodes.connect(session, node.id, wire.Hello(inventory=inventory, address=name), 2.0)
        return node.id


def add_run(
    session: Session,
    workspace_id: str,
    node_id: str,
    gpus: int,
    started: float,
    finished: float | None = None,
    *,
    name: str = "train",
    job_id: str = "j",
    replica_id: str = "r",
) -> None:
    """Job `name` whose one replica held GPUs 0..gpus-1 of `node_id` from `started`:
    running still, or succeeded at `finished`."""
    done = finished is not None
    session.add(
        Job(
            id=job_id,
            workspace_id=workspace_id,
            name=name,
            spec={"name": name, "command": "true"},
            state=JobState.SUCCEEDED if done else JobState.RUNNING,
            priority=0,
            attempt=1,
            submitted_at=started,
            started_at=started,
            finished_at=finished,
        )
    )
    session.flush()
    session.add(
        Replica(
            id=replica_id,
            job_id=job_id,
            attempt=1,
            rank=0,
            node_id=node_id,
            gpus=list(range(gpus)),
            cpus=1,
            memory_mb=0,
            disk_mb=0,
            state="succeeded" if done else "running",
            desired="run",
            created_at=started,
            started_at=started,
            finished_at=finished,
        )
    )


def check_liveness(session: Session, now: float, lost_after_s: float, alive_since: float) -> None:
    """One liveness round in `session`: the facts loaded, core's plan applied."""
    facts = liveness.load(session, now, lost_after_s, alive_since)
    liveness.apply_plan(session, core_liveness.decide(facts, now), {}, now)
