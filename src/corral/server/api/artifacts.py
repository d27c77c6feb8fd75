"""Uploaded working directories: /v1/workspaces/{workspace}/artifacts (the CLI uploads),
/v1/agent/artifacts (a node fetches what a replica assigned to it needs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from corral.server.api.deps import CP, WritableWorkspace
from corral.server.api.errors import ApiError
from corral.server.artifacts import service
from corral.server.artifacts.store import ArtifactStore, StoreError
from corral.server.errors import NotFound, Unauthorized
from corral.server.runtime import ControlPlane
from corral.server.services import nodes
from corral.wire.artifacts import (
    HEX,
    MAX_UPLOAD_BYTES,
    BlobQuery,
    Manifest,
    ManifestStored,
    Missing,
)

router = APIRouter(prefix="/v1/workspaces/{workspace}/artifacts", tags=["artifacts"])
agent_router = APIRouter(prefix="/v1/agent/artifacts", tags=["agent"])
T = TypeVar("T")
# Frames are verified and stored in worker threads, this many bytes at a time: an upload
# holds about this much beyond the blob being assembled.
FLUSH_BYTES = 4 * 1024 * 1024
# Request bodies these routes take, larger than the server's default bound: a POST of
# frames, and the manifest of a tree of many files (server/app.py's RequestBounds).
LARGE_BODIES = (r"^/v1/workspaces/[^/]+/artifacts/(blobs|manifests)$",)


def _store(cp: ControlPlane) -> ArtifactStore:
    if cp.artifacts is None:
        raise ApiError(404, "not_found", "this server keeps no uploaded working directories")
    return cp.artifacts


def _guarded(fn: Callable[..., T], *args: object) -> T:
    try:
        return fn(*args)
    except StoreError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None


def _digest(value: str) -> str:
    digest = value.removeprefix("sha256:")
    if not HEX.match(digest):
        raise NotFound(f"working directory {value[:80]!r} not found")
    return digest


@router.post("/missing")
def missing(body: BlobQuery, workspace: WritableWorkspace, cp: CP) -> Missing:
    """Which of these blobs the workspace's store lacks (the ones to upload)."""
    return Missing(missing=_guarded(service.missing, _store(cp), workspace.id, body.blobs))


@router.post("/blobs")
async def upload_blobs(request: Request, workspace: WritableWorkspace, cp: CP) -> dict[str, int]:
    """Frames of blobs (wire/artifacts.py), at most MAX_UPLOAD_BYTES in one request."""
    length = request.headers.get("content-length")
    if length is not None and int(length) > MAX_UPLOAD_BYTES:
        raise _too_large()
    sink = service.FrameSink(_store(cp), workspace.id)
    pending = bytearray()
    size = 0
    # One batch is verified and written in a worker thread while the next is received.
    writing: asyncio.Future[None] | None = None
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise _too_large()
            pending += chunk
            if len(pending) >= FLUSH_BYTES:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(
                    asyncio.to_thread(_guarded, sink.feed, bytes(pending))
                )
                pending.clear()
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            # Refused mid-way: the batch being written finishes, nothing after it starts.
            await asyncio.wait([writing])
    stored = await asyncio.to_thread(_guarded, sink.finish, bytes(pending))
    return {"stored": stored}


def _too_large() -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"an upload of blobs is at most {MAX_UPLOAD_BYTES} bytes; send the rest in another request",
    )


@router.post("/manifests", response_model=ManifestStored)
async def put_manifest(request: Request, workspace: WritableWorkspace, cp: CP) -> ManifestStored:
    """A tree whose every chunk the workspace has; its digest names it in `workdir`."""
    # Read with a bound (a chunked body passes the server's RequestBounds on these
    # routes), parsed in a worker thread: the manifest of a large tree is megabytes.
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_UPLOAD_BYTES:
            raise ApiError(413, "too_large", f"a manifest is at most {MAX_UPLOAD_BYTES} bytes")
    try:
        manifest = await asyncio.to_thread(Manifest.model_validate_json, bytes(raw))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    return await asyncio.to_thread(
        _guarded,
        service.put_manifest,
        _store(cp),
        workspace.id,
        manifest,
        cp.options.workdir_max_bytes,
    )


@router.get("/manifests/{digest}")
def get_manifest(digest: str, workspace: WritableWorkspace, cp: CP) -> ManifestStored:
    return _guarded(service.manifest_info, _store(cp), workspace.id, _digest(digest))


async def _node(request: Request, cp: ControlPlane) -> str:
    """The node whose token the request carries."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing node token: send `Authorization: Bearer <node token>`")
    # The lifeline's cache of node tokens (api/agent.py): the same question, answered once.
    node_id = cp.lifeline_tokens.get(token)
    if node_id is None:

        def lookup() -> str | None:
            with cp.store.read() as session:
                node = nodes.node_by_token(session, token)
                return node.id if node else None

        node_id = await asyncio.to_thread(lookup)
        if node_id is None:
            raise Unauthorized("unknown node token")
        cp.lifeline_tokens.put(token, node_id)
    return node_id


async def _readable(request: Request, cp: ControlPlane, workspace: str, digest: str) -> str:
    """The workspace's id, when a replica on the caller's node needs this tree."""
    node_id = await _node(request, cp)

    def check() -> str | None:
        with cp.store.read() as session:
            return service.node_may_read(session, node_id, workspace, digest)

    ws_id = await asyncio.to_thread(check)
    if ws_id is None:
        # Not "forbidden": a node learns nothing of trees its replicas do not use.
        raise NotFound(f"working directory {digest} not found")
    return ws_id


def _manifest(store: ArtifactStore, ws_id: str, digest: str) -> Manifest:
    manifest = service.load_manifest(store, ws_id, digest)
    if manifest is None:
        raise NotFound(f"working directory {digest} not found")
    return manifest


@agent_router.get("/{workspace}/manifests/{digest}")
async def node_manifest(workspace: str, digest: str, request: Request, cp: CP) -> Response:
    """The manifest (its canonical JSON: the bytes its digest is of)."""
    digest = _digest(digest)
    ws_id = await _readable(request, cp, workspace, digest)
    manifest = await asyncio.to_thread(_guarded, _manifest, _store(cp), ws_id, digest)
    return Response(manifest.canonical(), media_type="application/json")


@agent_router.post("/{workspace}/manifests/{digest}/blobs")
async def node_blobs(
    workspace: str, digest: str, body: BlobQuery, request: Request, cp: CP
) -> StreamingResponse:
    """Frames of exactly these blobs of the tree, streamed as they are read."""
    digest = _digest(digest)
    ws_id = await _readable(request, cp, workspace, digest)
    store = _store(cp)

    def prepare() -> list[str]:
        return service.blob_frames(store, ws_id, _manifest(store, ws_id, digest), body.blobs)

    wanted = await asyncio.to_thread(_guarded, prepare)
    # A plain iterator: Starlette reads it in a worker thread, a blob at a time.
    return StreamingResponse(
        service.stream_frames(store, ws_id, wanted), media_type="application/octet-stream"
    )
