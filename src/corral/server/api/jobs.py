"""/v1/workspaces/{workspace}/jobs, and /v1/jobs (every workspace's, for a cluster admin)"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.server.api.deps import CP, Caller, ReadableWorkspace, WritableWorkspace, retry_stale
from corral.server.api.errors import ApiError
from corral.server.api.paging import Paging
from corral.server.artifacts.service import check_workdir
from corral.server.auth import check_workspace_access
from corral.server.services import job_logs as logs_service
from corral.server.services import jobs as service
from corral.server.services.effects import Effects
from corral.server.services.fleet_models import resource_warnings
from corral.server.services.identity import workspace_by_name
from corral.spec.job import JobSpec
from corral.wire.api import JobKind, JobList, JobLogs, JobState, JobView, LogPage

router = APIRouter(prefix="/v1/workspaces/{workspace}/jobs", tags=["jobs"])
every_router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
MAX_WORKSPACES = 100  # named in one ?workspace= list

StateQuery = Query(None, description="only jobs in these states (repeat the parameter)")
KindQuery = Query(
    "all",
    description="job: submitted jobs; endpoint-replica: the jobs that run an endpoint's "
    "replicas; all: both",
)


@router.post("", status_code=201, response_model=JobView)
async def submit_job(spec: JobSpec, workspace: WritableWorkspace, cp: CP) -> Response:
    checkpoint_root = cp.options.resolved_checkpoint_root()
    if spec.workdir is not None and cp.artifacts is not None:
        # Outside the group-commit transaction: on S3 this is a request of its own.
        await asyncio.to_thread(check_workdir, cp.artifacts, workspace.id, spec.workdir)

    def submit(session: Session) -> JobView:
        job = service.submit_job(
            session, workspace, spec, cp.clock.now(), checkpoint_root, flush=False
        )
        view = service.job_view(session, job, workspace.name)
        warnings = resource_warnings(session, spec.resources)
        return view.model_copy(update={"warnings": warnings}) if warnings else view

    # Submissions arriving together share one transaction (server/writes.py).
    try:
        view = await cp.writes.run(submit)
    except IntegrityError:  # another server took the name between the check and the commit
        if spec.name is None:
            raise ApiError(409, "conflict", "the generated name was taken; submit again") from None
        raise service.name_taken(spec.name, workspace.name) from None
    cp.wake_scheduler()
    # Already a validated JobView: serialized once, not validated again on the way out.
    return Response(view.model_dump_json(), status_code=201, media_type="application/json")


@router.get("")
def list_jobs(
    workspace: ReadableWorkspace,
    cp: CP,
    page: Paging,
    state: list[JobState] | None = StateQuery,
    kind: JobKind = KindQuery,
) -> JobList:
    """The workspace's jobs, newest first, a page at a time."""
    which = service.JobFilter([workspace], frozenset(state or ()), kind)
    with cp.store.read() as session:
        jobs, cursor = service.list_jobs(session, which, page)
    return JobList(jobs=jobs, next_cursor=cursor)


@every_router.get("")
def list_every_job(
    caller: Caller,
    cp: CP,
    page: Paging,
    workspace: list[str] | None = Query(
        None, description="only these workspaces (repeat); default: every one the caller sees"
    ),
    state: list[JobState] | None = StateQuery,
    kind: JobKind = KindQuery,
) -> JobList:
    """Jobs across workspaces, newest first: every workspace for a cluster admin, the
    caller's own otherwise (naming another is refused as for its own routes)."""
    names = workspace or ([] if caller.cluster_admin else [caller.workspace or ""])
    if len(names) > MAX_WORKSPACES:
        message = f"at most {MAX_WORKSPACES} workspaces at once; got {len(names)}"
        raise ApiError(
            422, "invalid", f"workspace: {message}", [{"path": "workspace", "message": message}]
        )
    for name in names:
        check_workspace_access(caller, name, "viewer")
    with cp.store.read() as session:
        rows = []
        for name in names:
            row = workspace_by_name(session, name)
            if row is None:
                raise ApiError(404, "not_found", f"workspace '{name}' not found")
            rows.append(row)
        which = service.JobFilter(rows or None, frozenset(state or ()), kind)
        jobs, cursor = service.list_jobs(session, which, page)
    return JobList(jobs=jobs, next_cursor=cursor)


@router.get("/{name}")
def get_job(name: str, workspace: ReadableWorkspace, cp: CP) -> JobView:
    with cp.store.read() as session:
        job = service.get_job(session, workspace, name)
        return service.job_view(
            session, job, workspace.name, now=cp.clock.now(), catalog=cp.catalog
        )


@router.post("/{name}/cancel")
def cancel_job(name: str, workspace: WritableWorkspace, cp: CP) -> JobView:
    def cancel() -> tuple[JobView, Effects]:
        with cp.store.transaction() as session:
            job = service.get_job(session, workspace, name)
            effects = service.cancel_job(session, job, cp.clock.now())
            session.flush()
            return service.job_view(session, job, workspace.name), effects

    view, effects = retry_stale(cancel)
    cp.apply(effects)
    return view


@router.delete("/{name}", status_code=204)
def delete_job(name: str, workspace: WritableWorkspace, cp: CP) -> Response:
    def delete() -> None:
        with cp.store.transaction() as session:
            service.delete_job(session, service.get_job(session, workspace, name))

    retry_stale(delete)
    return Response(status_code=204)


@router.get("/{name}/logs")
def job_logs(
    name: str,
    workspace: ReadableWorkspace,
    cp: CP,
    replica: int = Query(0, ge=0, description="replica rank"),
    offset: int = Query(0, ge=0, description="byte offset to read from"),
    attempt: int | None = Query(None, ge=1, description="default: the current attempt"),
) -> LogPage:
    with cp.store.read() as session:
        job = service.get_job(session, workspace, name)
        return logs_service.read_logs(session, job, replica, offset, attempt)


@router.get("/{name}/logs/all")
def job_logs_all(
    name: str,
    workspace: ReadableWorkspace,
    cp: CP,
    offset: list[int] | None = Query(
        None, description="byte offset to read each replica from, by rank (repeat); default 0"
    ),
    attempt: int | None = Query(None, ge=1, description="default: the current attempt"),
) -> JobLogs:
    """Every replica's log at once, with the job's state: what `corral job run` and
    `corral job logs --replica all` poll."""
    offsets = offset or []
    if any(o < 0 for o in offsets):
        message = "a byte offset is 0 or more"
        raise ApiError(
            422, "invalid", f"offset: {message}", [{"path": "offset", "message": message}]
        )
    with cp.store.read() as session:
        job = service.get_job(session, workspace, name)
        return logs_service.read_all_logs(session, job, offsets, attempt)
