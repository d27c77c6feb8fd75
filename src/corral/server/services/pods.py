"""Dev pods: create, list, stop, start, delete; each run of a pod is a job of one replica.

A pod is a row of its own (what should be true: running or stopped, and its spec) and,
while it runs, one job (`jobs.pod_id`), so the scheduler, the runner, recovery from lost
nodes and the logs are the jobs' own. Its working directory is `.pods/<pod id>` in the
workspace's volume root on the node (ReplicaAssignment.work_volume), so its files outlive
each run.
"""

from __future__ import annotations

import secrets
import shlex
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.core.pods import IdleFacts, decide_idle, pod_state
from corral.core.states import LIVE_JOB_STATES, JobState
from corral.server.artifacts.service import check_workdir_format
from corral.server.errors import Conflict, Invalid, NotFound
from corral.server.services.effects import Effects
from corral.server.services.identity import new_id
from corral.server.services.jobs import cancel_job, current_replicas, submit_job
from corral.server.services.volumes import check_volumes
from corral.server.store.tables import Job, Node, Pod, PodEvent, Replica, Workspace
from corral.spec.job import JobSpec
from corral.spec.limits import STORED
from corral.spec.pod import JUPYTER_PORT, PodSpec
from corral.wire.pods import PodEventView, PodView

EVENTS_SHOWN = 50
JUPYTER_TOKEN_ENV = "CORRAL_JUPYTER_TOKEN"


def work_volume(pod_id: str) -> str:
    return f".pods/{pod_id}"


def stored_spec(pod: Pod) -> PodSpec:
    return PodSpec.model_validate(pod.spec, context=STORED)


def get_pod(session: Session, workspace: Workspace, name: str) -> Pod:
    pod = session.scalars(
        select(Pod).where(
            Pod.workspace_id == workspace.id, Pod.name == name, Pod.desired != "deleted"
        )
    ).first()
    if pod is None:
        raise NotFound(f"pod '{name}' not found in workspace '{workspace.name}'")
    return pod


def create_pod(
    session: Session, workspace: Workspace, spec: PodSpec, now: float, who: str
) -> tuple[Pod, Effects]:
    if spec.name is None:
        raise Invalid("a pod needs a name", [{"path": "name", "message": "required"}])
    taken = session.scalars(
        select(Pod).where(Pod.workspace_id == workspace.id, Pod.name == spec.name)
    ).first()
    if taken is not None:
        if taken.desired != "deleted":
            raise Conflict(
                f"pod '{spec.name}' already exists in workspace '{workspace.name}'; "
                f"`corral pod start {spec.name}` runs it again"
            )
        taken.name = f"{taken.id}"[:63]  # a deleted pod still stopping: free its name
        session.flush()
    check_workdir_format(spec.workdir)
    check_volumes(session, workspace, spec.volumes)
    stored = spec.model_copy(update={"workspace": workspace.name})
    pod = Pod(
        id=new_id(),
        workspace_id=workspace.id,
        name=spec.name,
        spec=stored.model_dump(mode="json"),
        desired="running",
        runs=0,
        jupyter_token=secrets.token_hex(16) if spec.jupyter else None,
        created_at=now,
    )
    session.add(pod)
    session.flush()
    return pod, _run(session, workspace, pod, now, who, "created")


def start_pod(session: Session, workspace: Workspace, pod: Pod, now: float, who: str) -> Effects:
    job = session.get(Job, pod.job_id) if pod.job_id else None
    if pod.desired == "running" and job is not None and job.state in LIVE_JOB_STATES:
        return Effects()  # already running (or on its way): starting twice is a no-op
    if job is not None and job.state == JobState.CANCELLING:
        raise Conflict(f"pod '{pod.name}' is still stopping; try again in a few seconds")
    check_volumes(session, workspace, stored_spec(pod).volumes)
    pod.desired = "running"
    pod.stop_reason = None
    return _run(session, workspace, pod, now, who, "started")


def _run(
    session: Session, workspace: Workspace, pod: Pod, now: float, who: str, verb: str
) -> Effects:
    pod.runs += 1
    job = submit_job(session, workspace, pod_job_spec(pod), now)
    job.pod_id = pod.id
    job.reason = "waiting for the scheduler"
    pod.job_id = job.id
    pod.last_activity_at = None
    pod.idle_warned_at = None
    add_event(session, pod.id, now, "start", f"{verb} by {who}", who=who)
    return Effects(wake_scheduler=True)


def stop_pod(session: Session, pod: Pod, now: float, reason: str, who: str | None) -> Effects:
    effects = Effects()
    if pod.desired == "running":
        pod.desired = "stopped"
        pod.stop_reason = reason
        pod.stopped_at = now
        add_event(session, pod.id, now, "stop", reason, who=who)
    job = session.get(Job, pod.job_id) if pod.job_id else None
    if job is not None:
        effects.merge(cancel_job(session, job, now))
        if job.state in (JobState.CANCELLING, JobState.CANCELLED):
            job.reason = reason
    return effects


def delete_pod(session: Session, pod: Pod, now: float, who: str) -> Effects:
    """The row goes once its last run has stopped (the pod controller removes it)."""
    effects = stop_pod(session, pod, now, f"deleted by {who}", who)
    pod.desired = "deleted"
    effects.wake_pods = True
    return effects


def pod_job_spec(pod: Pod) -> JobSpec:
    spec = stored_spec(pod)
    suffix = secrets.token_hex(3)
    base = pod.name[: 63 - len(f"-pod{pod.runs}-{suffix}")].rstrip("-")
    env = dict(spec.env)
    if pod.jupyter_token:
        env[JUPYTER_TOKEN_ENV] = pod.jupyter_token
    return JobSpec.model_validate(
        {
            "name": f"{base}-pod{pod.runs}-{suffix}",
            "workspace": spec.workspace,
            "command": pod_command(spec, pod.name),
            "env": env,
            "secrets": dict(spec.secrets),
            "files": dict(spec.files),
            "volumes": dict(spec.volumes),
            "resources": spec.resources,
            "replicas": 1,
            "max_restarts": 0,
            "priority": spec.priority,
            "node_selector": dict(spec.node_selector),
            # The code travels with every run: the same tree and environment each start.
            "workdir": spec.workdir,
            "environment": spec.environment,
            "setup": spec.setup,
            "image": spec.image,
        },
        context=STORED,
    )


def pod_command(spec: PodSpec, name: str) -> str:
    """What the pod's replica runs: JupyterLab in the background when asked and installed,
    then the spec's command, or a wait for sessions."""
    parts = [f"echo {shlex.quote(f'pod {name} is running: corral pod ssh {name}')}"]
    if spec.jupyter:
        parts.append(
            "if command -v jupyter >/dev/null 2>&1; then "
            f"jupyter lab --no-browser --ip=127.0.0.1 --port={JUPYTER_PORT} "
            "--ServerApp.port_retries=0 "
            f'--ServerApp.token="${JUPYTER_TOKEN_ENV}" --ServerApp.root_dir="$PWD" & '
            "else echo 'jupyter: not installed in this pod (pip install jupyterlab), "
            "not started'; fi"
        )
    parts.append(spec.command if spec.command is not None else "exec sleep infinity")
    return "\n".join(parts)


def add_event(
    session: Session, pod_id: str, now: float, kind: str, text: str, **fields: Any
) -> PodEvent:
    event = PodEvent(pod_id=pod_id, at=now, kind=kind, text=text[:2000], **fields)
    session.add(event)
    return event


def open_sessions(session: Session, pod_id: str) -> int:
    found = session.scalar(
        select(func.count())
        .select_from(PodEvent)
        .where(PodEvent.pod_id == pod_id, PodEvent.kind == "session", PodEvent.ended_at.is_(None))
    )
    return int(found or 0)


def idle_facts(session: Session, pod: Pod) -> IdleFacts | None:
    """Idle stop's facts for the pod controller; None: not running, so not idle-stoppable."""
    job = session.get(Job, pod.job_id) if pod.job_id else None
    replicas = current_replicas(session, job) if job is not None else []
    return _idle_facts(session, pod, job, replicas, open_sessions(session, pod.id))


def _idle_facts(
    session: Session, pod: Pod, job: Job | None, replicas: list[Replica], sessions: int
) -> IdleFacts | None:
    """The pod's open sessions, its idle clock, and the utilization its node last reported
    for its GPUs (core/pods.py decides)."""
    if pod.desired != "running" or job is None or job.state != JobState.RUNNING:
        return None
    spec = stored_spec(pod)
    util: list[int | None] = []
    started = job.started_at or pod.created_at
    for replica in replicas:
        started = replica.started_at or started
        node = session.get(Node, replica.node_id)
        reported = {
            g.get("index"): g.get("utilization_pct")
            for g in ((node.health_signals or {}).get("gpus") or [] if node else [])
        }
        for index in replica.gpus:
            value = reported.get(index)
            util.append(None if value is None else round(float(value)))
    return IdleFacts(
        idle_stop_s=spec.idle_stop,
        gpu_threshold=spec.idle_gpu_util,
        open_sessions=sessions,
        last_activity_at=max(pod.last_activity_at or 0.0, started),
        gpu_util=util,
        warned_at=pod.idle_warned_at,
    )


def pod_view(
    session: Session, workspace: Workspace, pod: Pod, now: float, *, events: bool = False
) -> PodView:
    """The pod as its owner sees it; `now` says when idle stop would stop it."""
    job = session.get(Job, pod.job_id) if pod.job_id else None
    state = pod_state(pod.desired, job.state.value if job is not None else None)
    if state == "failed" and job is not None and job.state == JobState.SUCCEEDED:
        state = "stopped"
    replicas = current_replicas(session, job) if job is not None else []
    sessions = open_sessions(session, pod.id)
    node_name: str | None = None
    gpus: list[int] = []
    started_at: float | None = None
    if job is not None and job.state in LIVE_JOB_STATES:
        for replica in replicas:
            node = session.get(Node, replica.node_id)
            node_name = node.name if node else None
            gpus = list(replica.gpus)
            started_at = replica.started_at
    idle = _idle_facts(session, pod, job, replicas, sessions)
    reason = None
    if job is not None and state in ("pending", "starting", "failed"):
        reason = job.reason
    stop_reason = pod.stop_reason
    if state == "stopped" and stop_reason is None and job is not None:
        stop_reason = job.reason
    shown: list[PodEventView] = []
    if events:
        rows = session.scalars(
            select(PodEvent)
            .where(PodEvent.pod_id == pod.id)
            .order_by(PodEvent.at.desc(), PodEvent.id.desc())
            .limit(EVENTS_SHOWN)
        )
        shown = [_event_view(e) for e in reversed(list(rows))]
    jupyter = (
        f"http://localhost:{JUPYTER_PORT}/lab?token={pod.jupyter_token}"
        if pod.jupyter_token
        else None
    )
    return PodView(
        name=pod.name,
        workspace=workspace.name,
        state=state,
        spec=stored_spec(pod),
        node=node_name,
        gpus=gpus,
        reason=reason,
        stop_reason=stop_reason if state in ("stopped", "stopping") else None,
        created_at=pod.created_at,
        started_at=started_at,
        stopped_at=pod.stopped_at if state in ("stopped", "stopping") else None,
        sessions=sessions,
        last_activity_at=pod.last_activity_at,
        idle_stop_at=decide_idle(idle, now).stop_at if idle is not None else None,
        jupyter_url=jupyter,
        events=shown,
    )


def _event_view(event: PodEvent) -> PodEventView:
    duration = event.ended_at - event.at if event.kind == "session" and event.ended_at else None
    return PodEventView(
        at=event.at,
        kind=event.kind,
        text=event.text,
        who=event.who,
        origin=event.origin,
        duration_s=duration,
        bytes=event.bytes,
    )


def list_pods(session: Session, workspace: Workspace) -> list[Pod]:
    return list(
        session.scalars(
            select(Pod)
            .where(Pod.workspace_id == workspace.id, Pod.desired != "deleted")
            .order_by(Pod.created_at.desc())
        )
    )
