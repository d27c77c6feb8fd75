"""What a session needs to start (the replica, its node, the keys) and its record."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from corral.core.pods import counts_as_activity
from corral.core.states import JobState, ReplicaState
from corral.server.errors import Conflict, NotFound
from corral.server.secretbox import SecretBox
from corral.server.services import ssh_keys
from corral.server.services.effects import Effects
from corral.server.services.identity import workspace_by_name
from corral.server.services.jobs import current_replicas
from corral.server.services.pods import add_event, get_pod
from corral.server.store.tables import Job, Node, Pod, PodEvent


@dataclass(frozen=True)
class Target:
    kind: str
    name: str
    pod_id: str | None
    replica_id: str
    node_id: str
    node: str
    authorized_keys: list[str]
    host_key: str  # decrypted: goes to the node in the session's own message


def find_target(
    session: Session,
    box: SecretBox,
    workspace: str,
    kind: str,
    name: str,
    rank: int,
    now: float,
) -> Target:
    """The running replica a session goes into, its node, and the keys the node needs;
    the workspace's host key is made on first use."""
    ws = workspace_by_name(session, workspace)
    if ws is None:
        raise NotFound(f"workspace '{workspace}' not found")
    pod_id = None
    if kind == "pod":
        pod = get_pod(session, ws, name)
        pod_id = pod.id
        job = session.get(Job, pod.job_id) if pod.job_id else None
        if pod.desired != "running" or job is None:
            raise Conflict(f"pod '{name}' is stopped; `corral pod start {name}` runs it")
    else:
        job = session.scalars(
            select(Job).where(Job.workspace_id == ws.id, Job.name == name)
        ).first()
        if job is None:
            raise NotFound(f"job '{name}' not found in workspace '{workspace}'")
    if job.state != JobState.RUNNING:
        raise Conflict(f"{kind} '{name}' is {_state(job)}; a session needs it running")
    replicas = [r for r in current_replicas(session, job) if r.rank == rank]
    if not replicas:
        raise NotFound(f"{kind} '{name}' has no replica {rank}")
    replica = replicas[0]
    if replica.state != ReplicaState.RUNNING:
        raise Conflict(f"replica {rank} of {kind} '{name}' is {replica.state}")
    node = session.get(Node, replica.node_id)
    assert node is not None
    keys = ssh_keys.authorized_keys(session, ws.id)
    if not keys:
        raise Conflict(
            f"workspace '{workspace}' has no SSH key registered; add yours with "
            "`corral ssh-key add ~/.ssh/id_ed25519.pub` (or run `corral pod ssh-config`)"
        )
    host = ssh_keys.host_key(session, ws.id, box, now)
    return Target(
        kind=kind,
        name=name,
        pod_id=pod_id,
        replica_id=replica.id,
        node_id=node.id,
        node=node.name,
        authorized_keys=keys,
        host_key=box.decrypt(host.private_key),
    )


def _state(job: Job) -> str:
    return "waiting to be placed" if job.state == JobState.PENDING else str(job.state)


def session_opened(session: Session, pod_id: str, who: str, origin: str, now: float) -> int:
    """Record an open session in its pod's events (open while `ended_at` is NULL)."""
    event = add_event(
        session,
        pod_id,
        now,
        "session",
        f"session by {who} from {origin}",
        who=who,
        origin=origin,
    )
    session.flush()
    return event.id


def session_closed(session: Session, event_id: int, now: float, nbytes: int) -> Effects:
    """Close a session's record; one long enough restarts its pod's idle clock. The pod
    controller looks again: with no session left, the pod's idle clock runs."""
    event = session.get(PodEvent, event_id)
    if event is None:
        return Effects()
    event.ended_at = now
    event.bytes = nbytes
    if counts_as_activity(event.at, now):
        pod = session.get(Pod, event.pod_id)
        if pod is not None:
            pod.last_activity_at = max(pod.last_activity_at or 0.0, now)
    return Effects(wake_pods=True)


def close_dangling(session: Session, now: float) -> None:
    """At start-up: sessions this store shows open were relayed by a server that stopped
    (every relay dies with its server); they are over."""
    session.execute(
        update(PodEvent)
        .where(PodEvent.kind == "session", PodEvent.ended_at.is_(None))
        .values(ended_at=now)
    )
