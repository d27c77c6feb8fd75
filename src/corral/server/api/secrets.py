"""/v1/workspaces/{workspace}/secrets: set, list and delete workspace secrets.

There is no route that returns a value: a value leaves the server only inside the desired
set of the node that starts a replica naming it (services/assignments.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from corral.server.api.deps import CP, ReadableWorkspace, WritableWorkspace
from corral.server.api.errors import ApiError
from corral.server.api.paging import Paging
from corral.server.secretbox import SecretBox
from corral.server.services import secrets as service
from corral.server.services.pages import list_page
from corral.spec.names import check_name
from corral.wire.api import SecretInfo, SecretList, SecretSet

router = APIRouter(prefix="/v1/workspaces/{workspace}/secrets", tags=["secrets"])


def _name(name: str) -> str:
    try:
        return check_name(name, "secret name")
    except ValueError as exc:
        raise ApiError(422, "invalid", str(exc), [{"path": "name", "message": str(exc)}]) from None


@router.put("/{name}", response_model=SecretInfo, responses={201: {"model": SecretInfo}})
def set_secret(
    name: str, body: SecretSet, workspace: WritableWorkspace, cp: CP, request: Request
) -> Response:
    """Create (201) or replace (200) a secret. Replicas that start later get the new value."""
    box: SecretBox = request.app.state.secret_box
    name = _name(name)
    with cp.store.transaction() as session:
        info, created = service.set_secret(
            session, box, workspace, name, body.value, cp.clock.now()
        )
    return Response(
        info.model_dump_json(), status_code=201 if created else 200, media_type="application/json"
    )


@router.get("")
def list_secrets(workspace: ReadableWorkspace, cp: CP, page: Paging) -> SecretList:
    """Names and times, by name, a page at a time; never a value."""
    with cp.store.read() as session:
        found = list_page(
            service.list_secrets(session, workspace), lambda s: (s.name,), (str,), page
        )
    return SecretList(secrets=found.items, next_cursor=found.next_cursor)


@router.delete("/{name}", status_code=204)
def delete_secret(name: str, workspace: WritableWorkspace, cp: CP) -> Response:
    """Refused (409) while a live job or endpoint of the workspace names it."""
    with cp.store.transaction() as session:
        service.delete_secret(session, workspace, _name(name))
    return Response(status_code=204)
