"""/v1/agent/bundle: the agent bundle (providers/bundle.py) for hosts that install it.

Answered to a cluster admin's API token (`corral node add` copies the bundle over SSH) or
to a join token that could still register a node (a cloud instance's user data fetches it
before its agent joins): the token is checked, never consumed. The bundle is built once
per server environment and cached under <home>/bundles; the first request builds it.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from corral.providers.bundle import BundleError, BundleInfo, bundle_info
from corral.server.api.deps import CP, bearer
from corral.server.api.errors import ApiError
from corral.server.auth import hash_token
from corral.server.runtime import ControlPlane
from corral.server.services.identity import authenticate_hash
from corral.server.services.join_tokens import join_token_state
from corral.server.store.tables import JoinToken

router = APIRouter(prefix="/v1/agent/bundle", tags=["agent"])


def _allowed(cp: ControlPlane, digest: str) -> bool:
    with cp.store.read() as session:
        row = session.scalars(select(JoinToken).where(JoinToken.token_hash == digest)).first()
        if row is not None:
            return join_token_state(row, cp.clock.now()) is None
        found = authenticate_hash(session, digest)
        return found is not None and found.cluster_admin


async def _authorized_bundle(request: Request, cp: ControlPlane) -> BundleInfo:
    digest = hash_token(bearer(request))
    if not await asyncio.to_thread(_allowed, cp, digest):
        raise ApiError(
            403,
            "forbidden",
            "the agent bundle needs a cluster admin's token or a join token that can "
            "still register a node",
        )
    try:
        return await asyncio.to_thread(bundle_info, cp.options.home)
    except BundleError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None


@router.get("/info")
async def info(request: Request, cp: CP) -> dict[str, object]:
    return (await _authorized_bundle(request, cp)).as_json()


@router.get("")
async def download(request: Request, cp: CP) -> FileResponse:
    found = await _authorized_bundle(request, cp)
    return FileResponse(
        found.path,
        media_type="application/gzip",
        filename=f"corral-agent-{found.key}.tar.gz",
        headers={"X-Corral-Bundle-Sha256": found.sha256},
    )
