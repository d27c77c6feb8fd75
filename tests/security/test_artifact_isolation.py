"""Uploaded working directories stay in their workspace: another workspace cannot learn of,
read or run them; a node reads only the trees its own replicas need; an upload over the
bounds is refused and leaves nothing of itself behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from corral.server.artifacts import service
from corral.server.errors import Invalid
from corral.server.runtime import ControlPlane
from corral.server.store.tables import Job, Replica, Workspace
from corral.wire.artifacts import (
    CHUNK_BYTES,
    HEADER_BYTES,
    MAX_UPLOAD_BYTES,
    FileEntry,
    Manifest,
    blob_digest,
    frame,
    frames,
)
from support.app import connected_node, in_process
from support.cluster import wait_for

ADMIN = {"Authorization": "Bearer crl_admin"}


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        for name in ("team-a", "team-b"):
            r = client.post("/v1/workspaces", json={"name": name}, headers=ADMIN)
            assert r.status_code == 201, r.text
        yield client


def member(api: TestClient, workspace: str) -> dict[str, str]:
    r = api.post("/v1/tokens", json={"role": "member", "workspace": workspace}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def upload(api: TestClient, ws: str, headers: dict[str, str], data: bytes) -> Manifest:
    digest = blob_digest(data)
    manifest = Manifest(files=[FileEntry(path="train.py", size=len(data), chunks=[digest])])
    art = f"/v1/workspaces/{ws}/artifacts"
    r = api.post(f"{art}/blobs", content=frame(digest, data), headers=headers)
    assert r.status_code == 200, r.text
    r = api.post(f"{art}/manifests", content=manifest.canonical(), headers=headers)
    assert r.status_code == 200, r.text
    return manifest


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_workspace_cannot_see_or_use_anothers_uploads(api: TestClient) -> None:
    a, b = member(api, "team-a"), member(api, "team-b")
    secret = b"TEAM_A_SECRET = 'x'\n"
    manifest = upload(api, "team-a", a, secret)
    blob = blob_digest(secret)
    # B asking about A's blob: B's store lacks it (nothing says A has it).
    r = api.post("/v1/workspaces/team-b/artifacts/missing", json={"blobs": [blob]}, headers=b)
    assert r.json() == {"missing": [blob]}
    # B cannot read A's manifest through its own workspace, nor reach A's routes.
    path = f"/artifacts/manifests/{manifest.digest()}"
    assert api.get(f"/v1/workspaces/team-b{path}", headers=b).status_code == 404
    assert api.get(f"/v1/workspaces/team-a{path}", headers=b).status_code == 403
    r = api.post("/v1/workspaces/team-a/artifacts/missing", json={"blobs": [blob]}, headers=b)
    assert r.status_code == 403
    r = api.post("/v1/workspaces/team-a/artifacts/blobs", content=frame(blob, secret), headers=b)
    assert r.status_code == 403
    # A manifest in B naming A's blob: B does not have it, so it is refused.
    r = api.post(
        "/v1/workspaces/team-b/artifacts/manifests", content=manifest.canonical(), headers=b
    )
    assert r.status_code == 422 and blob in r.json()["error"]["message"]
    # Nor can B run A's tree: the submission check finds it absent from B's store.
    cp: ControlPlane = api.app.state.cp  # type: ignore[attr-defined]
    assert cp.artifacts is not None
    with cp.store.read() as session:
        ids = {w.name: w.id for w in session.scalars(select(Workspace))}
    with pytest.raises(Invalid, match="not an uploaded working directory"):
        service.check_workdir(cp.artifacts, ids["team-b"], f"sha256:{manifest.digest()}")
    service.check_workdir(cp.artifacts, ids["team-a"], f"sha256:{manifest.digest()}")
    # ... and through the API, for a job and for a pod.
    workdir = f"sha256:{manifest.digest()}"
    for kind, body in (
        ("jobs", {"name": "steal", "command": "cat train.py", "workdir": workdir}),
        ("pods", {"name": "steal", "workdir": workdir}),
    ):
        r = api.post(f"/v1/workspaces/team-b/{kind}", json=body, headers=b)
        assert r.status_code == 422, (kind, r.text)
        assert r.json()["error"]["fields"][0]["path"] == "workdir", r.text
    r = api.post(
        "/v1/workspaces/team-a/jobs",
        json={"name": "mine", "command": "cat train.py", "workdir": workdir},
        headers=a,
    )
    assert r.status_code == 201, r.text


def test_a_node_reads_only_the_trees_of_replicas_it_runs(api: TestClient) -> None:
    cp: ControlPlane = api.app.state.cp  # type: ignore[attr-defined]
    a = member(api, "team-a")
    manifest = upload(api, "team-a", a, b"print('a')\n")
    n1, n1_auth = connected_node(api, "n1")
    job = {"name": "t", "command": "true", "workdir": f"sha256:{manifest.digest()}"}
    assert api.post("/v1/workspaces/team-a/jobs", json=job, headers=a).status_code == 201

    def placed() -> str | None:
        with cp.store.read() as session:
            return session.scalar(select(Replica.node_id))

    assert wait_for("the job to be placed", placed) == n1
    _, n2_auth = connected_node(api, "n2")
    path = f"/v1/agent/artifacts/team-a/manifests/{manifest.digest()}"
    assert api.get(path, headers=n1_auth).status_code == 200
    # Another node: nothing of its replicas uses the tree.
    assert api.get(path, headers=n2_auth).status_code == 404
    blobs = {"blobs": manifest.blobs()}
    assert api.post(f"{path}/blobs", json=blobs, headers=n2_auth).status_code == 404
    # The right node, the wrong workspace in the path: not found either.
    other = f"/v1/agent/artifacts/team-b/manifests/{manifest.digest()}"
    assert api.get(other, headers=n1_auth).status_code == 404
    # A forged token: refused.
    assert api.get(path, headers={"Authorization": "Bearer crn_forged"}).status_code == 401
    # Once the replica has ended, its node has no business with the tree any more.
    with cp.store.transaction() as session:
        session.scalars(select(Replica)).one().state = "succeeded"
        session.scalars(select(Job)).one().state = "succeeded"
    assert api.get(path, headers=n1_auth).status_code == 404
    assert api.post(f"{path}/blobs", json=blobs, headers=n1_auth).status_code == 404


def test_an_oversize_upload_is_refused_and_nothing_is_stored(
    api: TestClient, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    url = "/v1/workspaces/default/artifacts/blobs"
    # Announced by Content-Length: refused before a byte is read.
    data = os.urandom(1024)
    body = frame(blob_digest(data), data)
    r = api.post(
        url,
        content=body,
        headers={**ADMIN, "Content-Length": str(MAX_UPLOAD_BYTES + 1)},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert stored_files(root) == []
    # Sent chunked (no length): cut off at the bound; the blob crossing it is not kept.
    pieces = [os.urandom(CHUNK_BYTES) for _ in range(MAX_UPLOAD_BYTES // CHUNK_BYTES + 1)]
    assert sum(len(p) + HEADER_BYTES for p in pieces) > MAX_UPLOAD_BYTES

    def stream() -> Iterator[bytes]:
        yield from frames((blob_digest(p), p) for p in pieces)

    r = api.post(url, content=stream(), headers=ADMIN)
    assert r.status_code == 413, r.text
    last = blob_digest(pieces[-1])
    assert not any(p.name == last for p in stored_files(root))
    # A manifest sent chunked is bounded the same way.

    def endless() -> Iterator[bytes]:
        for _ in range(MAX_UPLOAD_BYTES // CHUNK_BYTES + 1):
            yield b" " * CHUNK_BYTES

    r = api.post("/v1/workspaces/default/artifacts/manifests", content=endless(), headers=ADMIN)
    assert r.status_code == 413, r.text
    # A frame larger than a chunk is refused as it starts, before its bytes are held.
    header = frame("a" * 64, b"")[:64] + (CHUNK_BYTES + 1).to_bytes(8, "big")
    r = api.post(url, content=header, headers=ADMIN)
    assert r.status_code == 422 and "at most" in r.json()["error"]["message"]


def test_a_frame_with_a_wrong_digest_stores_nothing_of_it(api: TestClient, tmp_path: Path) -> None:
    data = b"the real bytes" * 1000
    claimed = blob_digest(b"what the frame claims")
    r = api.post(
        "/v1/workspaces/default/artifacts/blobs", content=frame(claimed, data), headers=ADMIN
    )
    assert r.status_code == 422 and claimed[:12] in r.json()["error"]["message"]
    names = {p.name for p in stored_files(tmp_path / "artifacts")}
    assert claimed not in names and blob_digest(data) not in names
    assert not any(n.startswith(".tmp-") for n in names)
