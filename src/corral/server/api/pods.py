"""/v1/workspaces/{workspace}/pods, /ssh-keys, /ssh/host-key and /volumes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from corral.server.api.deps import CP, Caller, ReadableWorkspace, WritableWorkspace, retry_stale
from corral.server.artifacts.service import check_workdir
from corral.server.runtime import ControlPlane
from corral.server.secretbox import SecretBox
from corral.server.services import pods as service
from corral.server.services import ssh_keys, volumes
from corral.server.store.tables import Pod, Workspace
from corral.spec.pod import PodSpec
from corral.wire.pods import (
    HostKeyView,
    PodList,
    PodView,
    SshKeyAdd,
    SshKeyList,
    SshKeyView,
    VolumeCreate,
    VolumeList,
    VolumeView,
)
from corral.wire.sessions import DropVolume

router = APIRouter(prefix="/v1/workspaces/{workspace}", tags=["pods"])


def _view(cp: ControlPlane, workspace: Workspace, pod: Pod, events: bool) -> PodView:
    with cp.store.read() as session:
        pod = session.get(Pod, pod.id) or pod
        return service.pod_view(session, workspace, pod, cp.clock.now(), events=events)


@router.post("/pods", status_code=201)
def create_pod(spec: PodSpec, workspace: WritableWorkspace, caller: Caller, cp: CP) -> PodView:
    if spec.workdir is not None and cp.artifacts is not None:
        check_workdir(cp.artifacts, workspace.id, spec.workdir)  # before the transaction

    def create() -> Pod:
        with cp.store.transaction() as session:
            pod, effects = service.create_pod(
                session, workspace, spec, cp.clock.now(), caller.token_name
            )
        cp.apply(effects)
        return pod

    return _view(cp, workspace, retry_stale(create), True)


@router.get("/pods")
def list_pods(workspace: ReadableWorkspace, cp: CP) -> PodList:
    with cp.store.read() as session:
        now = cp.clock.now()
        return PodList(
            pods=[
                service.pod_view(session, workspace, p, now)
                for p in service.list_pods(session, workspace)
            ]
        )


@router.get("/pods/{name}")
def get_pod(name: str, workspace: ReadableWorkspace, cp: CP) -> PodView:
    with cp.store.read() as session:
        pod = service.get_pod(session, workspace, name)
    return _view(cp, workspace, pod, True)


@router.post("/pods/{name}/stop")
def stop_pod(name: str, workspace: WritableWorkspace, caller: Caller, cp: CP) -> PodView:
    def stop() -> Pod:
        with cp.store.transaction() as session:
            pod = service.get_pod(session, workspace, name)
            who = caller.token_name
            effects = service.stop_pod(session, pod, cp.clock.now(), f"stopped by {who}", who)
        cp.apply(effects)
        return pod

    return _view(cp, workspace, retry_stale(stop), True)


@router.post("/pods/{name}/start")
def start_pod(name: str, workspace: WritableWorkspace, caller: Caller, cp: CP) -> PodView:
    def start() -> Pod:
        with cp.store.transaction() as session:
            pod = service.get_pod(session, workspace, name)
            effects = service.start_pod(session, workspace, pod, cp.clock.now(), caller.token_name)
        cp.apply(effects)
        return pod

    return _view(cp, workspace, retry_stale(start), True)


@router.delete("/pods/{name}", status_code=204)
def delete_pod(name: str, workspace: WritableWorkspace, caller: Caller, cp: CP) -> Response:
    def delete() -> None:
        with cp.store.transaction() as session:
            pod = service.get_pod(session, workspace, name)
            effects = service.delete_pod(session, pod, cp.clock.now(), caller.token_name)
        cp.apply(effects)

    retry_stale(delete)
    return Response(status_code=204)


@router.get("/ssh/host-key")
def host_key(workspace: ReadableWorkspace, request: Request, cp: CP) -> HostKeyView:
    box: SecretBox = request.app.state.secret_box
    with cp.store.transaction() as session:
        row = ssh_keys.host_key(session, workspace.id, box, cp.clock.now())
        return HostKeyView(workspace=workspace.name, public_key=row.public_key)


@router.post("/ssh-keys", status_code=201)
def add_key(body: SshKeyAdd, workspace: WritableWorkspace, caller: Caller, cp: CP) -> SshKeyView:
    with cp.store.transaction() as session:
        return ssh_keys.add_key(session, workspace, body, caller.token_name, cp.clock.now())


@router.get("/ssh-keys")
def list_keys(workspace: ReadableWorkspace, cp: CP) -> SshKeyList:
    with cp.store.read() as session:
        return SshKeyList(keys=ssh_keys.list_keys(session, workspace))


@router.delete("/ssh-keys/{name}", status_code=204)
def delete_key(name: str, workspace: WritableWorkspace, cp: CP) -> Response:
    with cp.store.transaction() as session:
        ssh_keys.delete_key(session, workspace, name)
    return Response(status_code=204)


@router.post("/volumes", status_code=201)
def create_volume(body: VolumeCreate, workspace: WritableWorkspace, cp: CP) -> VolumeView:
    with cp.store.transaction() as session:
        return volumes.create_volume(session, workspace, body.name, cp.clock.now())


@router.get("/volumes")
def list_volumes(workspace: ReadableWorkspace, cp: CP) -> VolumeList:
    with cp.store.read() as session:
        return VolumeList(volumes=volumes.list_volumes(session, workspace))


@router.delete("/volumes/{name}", status_code=204)
async def delete_volume(name: str, workspace: WritableWorkspace, cp: CP) -> Response:
    def delete() -> None:
        with cp.store.transaction() as session:
            volumes.delete_volume(session, workspace, name)

    await asyncio.to_thread(delete)
    # Every connected node removes its directory (a node away now keeps it: see the note
    # in agent/volumes.py on what a node does with volumes it no longer has rows for).
    drop = DropVolume(workspace=workspace.name, name=name)
    for node_id in cp.hub.connected():
        await cp.hub.tell(node_id, drop)
    return Response(status_code=204)
