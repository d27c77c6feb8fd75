"""/v1/workspaces/{workspace}/jobs"""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.server.api.deps import CP, ReadableWorkspace, WritableWorkspace, retry_stale
from corral.server.api.errors import ApiError
from corral.server.services import jobs as service
from corral.server.services.effects import Effects
from corral.server.services.fleet_models import resource_warnings
from corral.spec.job import JobSpec
from corral.wire.api import JobList, JobView, LogPage

router = APIRouter(prefix="/v1/workspaces/{workspace}/jobs", tags=["jobs"])


@router.post("", status_code=201, response_model=JobView)
async def submit_job(spec: JobSpec, workspace: WritableWorkspace, cp: CP) -> Response:
    checkpoint_root = cp.options.resolved_checkpoint_root()

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
def list_jobs(workspace: ReadableWorkspace, cp: CP) -> JobList:
    with cp.store.read() as session:
        return JobList(jobs=service.list_jobs(session, workspace))


@router.get("/{name}")
def get_job(name: str, workspace: ReadableWorkspace, cp: CP) -> JobView:
    with cp.store.read() as session:
        job = service.get_job(session, workspace, name)
        return service.job_view(session, job, workspace.name, now=cp.clock.now())


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
        return service.read_logs(session, job, replica, offset, attempt)
