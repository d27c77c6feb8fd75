"""Uploaded working directories through the API, in-process on SQLite and PostgreSQL: the
CLI's side (missing, blobs, manifests), a node's fetch, the assignment's code fields, and
the wheelhouse index."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from corral.server.app import create_app
from corral.server.config import ServerOptions, SettingError
from corral.server.runtime import ControlPlane
from corral.server.services.assignments import build_assignments
from corral.server.store.tables import Job, Replica
from corral.wire.artifacts import (
    CHUNK_BYTES,
    FileEntry,
    FrameReader,
    Manifest,
    blob_digest,
    frames,
)
from support.app import connected_node, in_process
from support.cluster import wait_for

ADMIN = {"Authorization": "Bearer crl_admin"}
WS = "/v1/workspaces/default"
ART = f"{WS}/artifacts"


def pack(files: dict[str, bytes]) -> tuple[Manifest, dict[str, bytes]]:
    """A manifest of `files` and its blobs, cut as the CLI cuts them."""
    entries = []
    blobs: dict[str, bytes] = {}
    for path in sorted(files):
        data = files[path]
        chunks = []
        for start in range(0, len(data), CHUNK_BYTES):
            piece = data[start : start + CHUNK_BYTES]
            blobs[blob_digest(piece)] = piece
            chunks.append(blob_digest(piece))
        entries.append(FileEntry(path=path, size=len(data), chunks=chunks))
    return Manifest(files=entries), blobs


def upload(api: TestClient, files: dict[str, bytes], headers: dict[str, str] = ADMIN) -> str:
    """What `corral job run` does with a directory: returns `sha256:<digest>`."""
    manifest, blobs = pack(files)
    r = api.post(f"{ART}/missing", json={"blobs": manifest.blobs()}, headers=headers)
    assert r.status_code == 200, r.text
    wanted = r.json()["missing"]
    body = b"".join(frames((d, blobs[d]) for d in wanted))
    r = api.post(f"{ART}/blobs", content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"stored": len(wanted)}, r.text
    r = api.post(f"{ART}/manifests", content=manifest.canonical(), headers=headers)
    assert r.status_code == 200, r.text
    return "sha256:" + r.json()["digest"]


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def control_plane(api: TestClient) -> ControlPlane:
    cp: ControlPlane = api.app.state.cp  # type: ignore[attr-defined]
    return cp


def placed(cp: ControlPlane, job: str) -> str:
    """The node the scheduler put job `job`'s replica on."""

    def where() -> str | None:
        with cp.store.read() as session:
            return session.scalar(
                select(Replica.node_id).join(Job, Replica.job_id == Job.id).where(Job.name == job)
            )

    return wait_for(f"job {job} to be placed", where)


def test_an_upload_is_content_addressed_and_a_change_sends_only_its_blob(
    api: TestClient, tmp_path: Path
) -> None:
    big = os.urandom(CHUNK_BYTES + 1000)  # two chunks
    files = {"train.py": b"print('hi')\n", "data/big.bin": big, "empty": b""}
    manifest, blobs = pack(files)
    r = api.post(f"{ART}/missing", json={"blobs": manifest.blobs()}, headers=ADMIN)
    assert sorted(r.json()["missing"]) == sorted(blobs)
    digest = upload(api, files)
    assert digest == f"sha256:{manifest.digest()}"
    r = api.get(f"{ART}/manifests/{manifest.digest()}", headers=ADMIN)
    assert r.json() == {"digest": manifest.digest(), "files": 3, "bytes": len(big) + 12}
    # Everything is there now: nothing to send again.
    r = api.post(f"{ART}/missing", json={"blobs": manifest.blobs()}, headers=ADMIN)
    assert r.json() == {"missing": []}
    # One file changed: only its blob is missing.
    changed, _ = pack({**files, "train.py": b"print('bye')\n"})
    r = api.post(f"{ART}/missing", json={"blobs": changed.blobs()}, headers=ADMIN)
    assert r.json() == {"missing": [blob_digest(b"print('bye')\n")]}
    # On disk: owner-only, and the layout of the contract.
    root = tmp_path / "artifacts"
    [ws_dir] = list(root.iterdir())
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    blob = ws_dir / "blobs" / blob_digest(big[:CHUNK_BYTES])[:2] / blob_digest(big[:CHUNK_BYTES])
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600 and blob.read_bytes() == big[:CHUNK_BYTES]
    assert (ws_dir / "manifests" / f"{manifest.digest()}.json").read_bytes() == (
        manifest.canonical()
    )
    assert not any(p.name.startswith(".tmp-") for p in ws_dir.rglob("*"))


def test_a_manifest_is_refused_when_a_blob_is_absent_or_a_size_lies(api: TestClient) -> None:
    manifest, blobs = pack({"a.py": b"a = 1\n"})
    r = api.post(f"{ART}/manifests", content=manifest.canonical(), headers=ADMIN)
    assert r.status_code == 422
    [absent] = blobs
    assert absent in r.json()["error"]["message"]
    api.post(f"{ART}/blobs", content=b"".join(frames(blobs.items())), headers=ADMIN)
    # A manifest claiming a small file whose chunks hold more: the limit would be dodged.
    lying = Manifest(files=[FileEntry(path="a.py", size=1, chunks=[absent])])
    r = api.post(f"{ART}/manifests", content=lying.canonical(), headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "files[0].size"
    # A path that is a file and a directory at once.
    clash = Manifest(
        files=[
            FileEntry(path="a.py", size=6, chunks=[absent]),
            FileEntry(path="a.py/x", size=6, chunks=[absent]),
        ]
    )
    r = api.post(f"{ART}/manifests", content=clash.canonical(), headers=ADMIN)
    assert r.status_code == 422 and "not a directory" in r.json()["error"]["message"]
    # Not a manifest at all: the field is named.
    r = api.post(f"{ART}/manifests", json={"files": [{"path": "/etc/passwd"}]}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "files[0].path"
    r = api.get(f"{ART}/manifests/{'0' * 64}", headers=ADMIN)
    assert r.status_code == 404


def test_a_tree_over_the_servers_limit_is_refused(database_url: str, tmp_path: Path) -> None:
    with in_process(database_url, tmp_path, workdir_max_bytes=1000) as api:
        manifest, blobs = pack({"a": b"x" * 600, "b": b"y" * 600})
        api.post(f"{ART}/blobs", content=b"".join(frames(blobs.items())), headers=ADMIN)
        r = api.post(f"{ART}/manifests", content=manifest.canonical(), headers=ADMIN)
        assert r.status_code == 422
        assert "CORRAL_WORKDIR_MAX_BYTES" in r.json()["error"]["message"]
        assert api.get(f"{ART}/manifests/{manifest.digest()}", headers=ADMIN).status_code == 404


def test_bad_frames_are_refused_naming_the_blob(api: TestClient) -> None:
    good, bad = b"good bytes", b"bad bytes"
    lie = blob_digest(b"something else")
    body = b"".join(frames([(blob_digest(good), good), (lie, bad)]))
    r = api.post(f"{ART}/blobs", content=body, headers=ADMIN)
    assert r.status_code == 422 and lie[:12] in r.json()["error"]["message"]
    r = api.post(f"{ART}/missing", json={"blobs": [blob_digest(good), lie]}, headers=ADMIN)
    assert lie in r.json()["missing"]  # nothing of it kept (the good one: sent again)
    truncated = b"".join(frames([(blob_digest(b"whole"), b"whole")]))[:-1]
    r = api.post(f"{ART}/blobs", content=truncated, headers=ADMIN)
    assert r.status_code == 422 and "truncated" in r.json()["error"]["message"]
    r = api.post(f"{ART}/missing", json={"blobs": ["not-hex"]}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "blobs"


def test_a_job_names_its_tree_by_digest(api: TestClient) -> None:
    r = api.post(f"{WS}/jobs", json={"command": "true", "workdir": "./src"}, headers=ADMIN)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["fields"][0]["path"] == "workdir"
    assert "sha256:" in error["message"] and "corral job run uploads it" in error["message"]
    r = api.post(f"{WS}/pods", json={"name": "dev", "workdir": "/home/me/p"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["path"] == "workdir"


def test_the_assignment_carries_the_code_and_the_node_fetches_it(
    api: TestClient, tmp_path: Path
) -> None:
    cp = control_plane(api)
    files = {"pkg/__init__.py": b"", "train.py": b"import pkg\n", "requirements.txt": b"x\n"}
    manifest, blobs = pack(files)
    digest = upload(api, files)
    node_id, node_auth = connected_node(api, "n1")
    spec: dict[str, Any] = {
        "name": "train",
        "command": "python train.py",
        "workdir": digest,
        "environment": {"python": "3.11", "requirements": "requirements.txt"},
        "setup": "echo setup",
    }
    r = api.post(f"{WS}/jobs", json=spec, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert placed(cp, "train") == node_id
    with cp.store.read() as session:
        [assignment] = build_assignments(session, node_id, wheelhouse=True)
    assert assignment.workdir == manifest.digest()
    assert assignment.environment == {"python": "3.11", "requirements": "requirements.txt"}
    assert assignment.setup == "echo setup" and assignment.image is None
    assert assignment.wheelhouse is True
    # The node fetches the manifest (its canonical bytes) and exactly the blobs it asks for.
    path = f"/v1/agent/artifacts/default/manifests/{manifest.digest()}"
    r = api.get(path, headers=node_auth)
    assert r.status_code == 200 and r.content == manifest.canonical()
    assert blob_digest(r.content) == manifest.digest()
    wanted = [blob_digest(b"import pkg\n"), blob_digest(b"x\n")]
    r = api.post(f"{path}/blobs", json={"blobs": wanted}, headers=node_auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    reader = FrameReader()
    got = reader.feed(r.content)
    reader.finish()
    assert got == [(d, blobs[d]) for d in wanted]
    # A blob that is not in this tree is refused, by name.
    other = blob_digest(b"not in the tree")
    r = api.post(f"{path}/blobs", json={"blobs": [other]}, headers=node_auth)
    assert r.status_code == 422 and other in r.json()["error"]["message"]
    # Without a node token: 401; with a user's token: 401 too (not a node).
    assert api.get(path).status_code == 401
    assert api.get(path, headers=ADMIN).status_code == 401
    # A stored blob whose bytes went bad (a write cut short by a crash): the stream ends
    # short, and the blob is dropped so that the next upload sends it again.
    bad = blob_digest(b"import pkg\n")
    [stored] = (tmp_path / "artifacts").glob(f"*/blobs/{bad[:2]}/{bad}")
    stored.write_bytes(b"import pkX\n")
    r = api.post(f"{path}/blobs", json={"blobs": [blob_digest(b"x\n"), bad]}, headers=node_auth)
    reader = FrameReader()
    assert [d for d, _ in reader.feed(r.content)] == [blob_digest(b"x\n")]
    assert not stored.exists()
    r = api.post(f"{ART}/missing", json={"blobs": manifest.blobs()}, headers=ADMIN)
    assert r.json() == {"missing": [bad]}
    # Once started, the node has it: the desired set no longer carries it.
    with cp.store.transaction() as session:
        session.scalars(select(Replica)).one().state = "running"
    with cp.store.read() as session:
        [running] = build_assignments(session, node_id, wheelhouse=True)
    assert running.workdir is None and running.environment is None and not running.wheelhouse


def test_a_pods_runs_carry_its_code(api: TestClient) -> None:
    digest = upload(api, {"notebook.py": b"print(1)\n"})
    spec = {"name": "dev", "workdir": digest, "setup": "echo hi", "environment": {"python": "3.12"}}
    r = api.post(f"{WS}/pods", json=spec, headers=ADMIN)
    assert r.status_code == 201, r.text
    cp = control_plane(api)
    with cp.store.read() as session:
        [job] = session.scalars(select(Job).where(Job.pod_id.is_not(None))).all()
        assert job.spec["workdir"] == digest and job.spec["setup"] == "echo hi"
        assert job.spec["environment"] == {"python": "3.12", "requirements": None, "uv_lock": None}


def wheel(root: Path, name: str, data: bytes) -> str:
    (root / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_the_wheelhouse_is_a_simple_index(database_url: str, tmp_path: Path) -> None:
    house = tmp_path / "wheels"
    house.mkdir()
    first = wheel(house, "Foo_Bar-1.0-py3-none-any.whl", b"wheel one")
    wheel(house, "foo_bar-1.1-py3-none-any.whl", b"wheel two")
    wheel(house, "other-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", b"wheel three")
    (house / "README.txt").write_text("not a wheel")
    with in_process(database_url, tmp_path / "home", wheelhouse=house) as api:
        # No token: a mirror of public packages.
        r = api.get("/v1/wheels/simple/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert 'href="foo-bar/"' in r.text and 'href="other/"' in r.text
        assert "README" not in r.text
        r = api.get("/v1/wheels/simple/Foo.Bar/")  # any spelling of the name
        assert r.status_code == 200
        href = f'href="../../files/Foo_Bar-1.0-py3-none-any.whl#sha256={first}"'
        assert href in r.text and "foo_bar-1.1-py3-none-any.whl" in r.text
        r = api.get("/v1/wheels/files/Foo_Bar-1.0-py3-none-any.whl")
        assert r.status_code == 200 and r.content == b"wheel one"
        assert api.get("/v1/wheels/simple/nothing/").status_code == 404
        assert api.get("/v1/wheels/files/README.txt").status_code == 404
        assert api.get("/v1/wheels/files/..%2Fsecret.whl").status_code == 404
    with in_process(database_url, tmp_path / "home2") as api:
        assert api.get("/v1/wheels/simple/").status_code == 404


def test_the_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CORRAL_ARTIFACT_STORE", "s3://bucket/prefix")
    monkeypatch.setenv("CORRAL_WORKDIR_MAX_BYTES", "1048576")
    monkeypatch.setenv("CORRAL_WHEELHOUSE", str(tmp_path))
    options = ServerOptions.from_env(home=tmp_path)
    assert options.resolved_artifact_store() == "s3://bucket/prefix"
    assert options.workdir_max_bytes == 1048576 and options.wheelhouse == tmp_path
    monkeypatch.setenv("CORRAL_WORKDIR_MAX_BYTES", "2GB")
    with pytest.raises(SettingError, match=r"CORRAL_WORKDIR_MAX_BYTES.*'2GB'"):
        ServerOptions.from_env(home=tmp_path)
    # An unusable store stops the server before it starts, naming the setting.
    with pytest.raises(SettingError, match="CORRAL_ARTIFACT_STORE"):
        create_app(ServerOptions(home=tmp_path, artifact_store="ftp://host/dir"))
    assert ServerOptions(home=tmp_path).resolved_artifact_store() == str(tmp_path / "artifacts")
