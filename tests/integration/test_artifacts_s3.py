"""The artifact store on an S3-compatible bucket: moto's server on loopback, reached by
boto3 through AWS_ENDPOINT_URL, as a real deployment reaches MinIO or S3."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from corral.server.artifacts.store import HEADS_PER_PAGE, S3Store
from corral.server.runtime import ControlPlane
from corral.server.store.tables import Replica
from corral.wire.artifacts import (
    CHUNK_BYTES,
    FileEntry,
    FrameReader,
    Manifest,
    blob_digest,
    frames,
)
from support.app import ADMIN_TOKEN as APP_ADMIN_TOKEN
from support.app import connected_node, in_process
from support.cluster import ADMIN_TOKEN, Cluster, wait_for

BUCKET = "corral-artifacts"
WS = "0f3c2a9e-ws"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A bucket on moto's server; boto3 in this process (and the server's, which inherits
    this environment) goes there."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()


def keys(client: Any, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


def test_the_store_operations_on_a_bucket(s3: Any) -> None:
    store = S3Store.from_url(f"s3://{BUCKET}/corral/")
    data = b"x = 1\n"
    digest = blob_digest(data)
    assert store.sizes(WS, [digest]) == {}
    assert store.get_blob(WS, digest) is None and store.get_manifest(WS, digest) is None
    store.put_blob(WS, digest, data)
    assert store.sizes(WS, [digest]) == {digest: len(data)}
    assert store.get_blob(WS, digest) == data
    store.put_manifest(WS, digest, b"{}")
    assert store.get_manifest(WS, digest) == b"{}"
    # The contract's layout, under the prefix.
    assert sorted(keys(s3, "corral/")) == [
        f"corral/{WS}/blobs/{digest[:2]}/{digest}",
        f"corral/{WS}/manifests/{digest}.json",
    ]
    # Another workspace's question about the same blob: absent there.
    assert store.sizes("other-ws", [digest]) == {}
    store.delete_blob(WS, digest)
    assert store.get_blob(WS, digest) is None


def test_a_large_query_lists_pages_then_asks_for_the_rest(s3: Any) -> None:
    """Several pages of blobs stored (pages of 100 here): a small query HEADs each blob, a
    large one lists a few pages and HEADs what lies past them, a very large one lists all.
    Each answer is exactly the stored blobs of the query."""
    store = S3Store(BUCKET, "p")
    store.page_keys = 100
    datas = [f"blob {i}".encode() for i in range(300)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda d: store.put_blob(WS, blob_digest(d), d), datas))
    stored = {blob_digest(d): len(d) for d in datas}
    absent = [blob_digest(f"absent {i}".encode()) for i in range(300)]
    present = sorted(stored)
    assert 2 * HEADS_PER_PAGE > 20 and 150 // HEADS_PER_PAGE < 3  # the paths meant below
    for query in (
        present[:10] + absent[:10],  # HEADs
        present[:75] + present[-75:] + absent[:10],  # two pages listed of three, then HEADs
        present + absent,  # the whole listing
    ):
        expected = {d: stored[d] for d in query if d in stored}
        assert store.sizes(WS, query) == expected
    assert len(keys(s3, f"p/{WS}/blobs/")) == 300


def test_an_upload_through_a_real_server_lands_in_the_bucket(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_ARTIFACT_STORE", f"s3://{BUCKET}/cp")
    cluster = Cluster(tmp_path)
    cluster.start_server()
    try:
        big = os.urandom(CHUNK_BYTES + 10)
        pieces = [big[:CHUNK_BYTES], big[CHUNK_BYTES:], b"print('hi')\n"]
        manifest = Manifest(
            files=[
                FileEntry(
                    path="data.bin", size=len(big), chunks=[blob_digest(p) for p in pieces[:2]]
                ),
                FileEntry(path="train.py", size=len(pieces[2]), chunks=[blob_digest(pieces[2])]),
            ]
        )
        base = f"{cluster.url}/v1/workspaces/default/artifacts"
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(headers=auth, timeout=30) as http:
            r = http.post(f"{base}/missing", json={"blobs": manifest.blobs()})
            assert r.status_code == 200 and len(r.json()["missing"]) == 3

            def chunked() -> Iterator[bytes]:  # no Content-Length: streamed as it goes
                yield from frames((blob_digest(p), p) for p in pieces)

            r = http.post(f"{base}/blobs", content=chunked())
            assert r.status_code == 200 and r.json() == {"stored": 3}, r.text
            r = http.post(f"{base}/missing", json={"blobs": manifest.blobs()})
            assert r.json() == {"missing": []}
            r = http.post(f"{base}/manifests", content=manifest.canonical())
            assert r.status_code == 200, r.text
            assert r.json() == {"digest": manifest.digest(), "files": 2, "bytes": len(big) + 12}
            r = http.get(f"{base}/manifests/{manifest.digest()}")
            assert r.status_code == 200 and r.json()["digest"] == manifest.digest()
    finally:
        cluster.close()
    stored = keys(s3, "cp/")
    assert len(stored) == 4 and all(k.startswith("cp/") for k in stored)
    assert sum(k.endswith(f"/manifests/{manifest.digest()}.json") for k in stored) == 1
    # Nothing went to the default directory store.
    assert not (tmp_path / "home" / "artifacts").exists() or not any(
        p.is_file() for p in (tmp_path / "home" / "artifacts").rglob("*")
    )


def test_a_node_fetches_a_tree_from_the_bucket(s3: Any, tmp_path: Path) -> None:
    """The agent's side on S3: the manifest, and its blobs streamed in order (read ahead)."""
    pieces = [os.urandom(1000 + i) for i in range(40)]
    manifest = Manifest(
        files=[
            FileEntry(path=f"f{i:02}", size=len(p), chunks=[blob_digest(p)])
            for i, p in enumerate(pieces)
        ]
    )
    database = f"sqlite:///{tmp_path / 'corral.db'}"
    with in_process(database, tmp_path, artifact_store=f"s3://{BUCKET}/cp") as api:
        base = "/v1/workspaces/default/artifacts"
        auth = {"Authorization": f"Bearer {APP_ADMIN_TOKEN}"}
        body = b"".join(frames((blob_digest(p), p) for p in pieces))
        assert api.post(f"{base}/blobs", content=body, headers=auth).json() == {"stored": 40}
        r = api.post(f"{base}/manifests", content=manifest.canonical(), headers=auth)
        assert r.status_code == 200, r.text
        cp: ControlPlane = api.app.state.cp  # type: ignore[attr-defined]
        _, node_auth = connected_node(api, "n1")
        job = {"name": "t", "command": "true", "workdir": f"sha256:{manifest.digest()}"}
        assert api.post("/v1/workspaces/default/jobs", json=job, headers=auth).status_code == 201

        def placed() -> bool:
            with cp.store.read() as session:
                return session.scalar(select(Replica.id)) is not None

        wait_for("the job to be placed", placed)
        path = f"/v1/agent/artifacts/default/manifests/{manifest.digest()}"
        r = api.get(path, headers=node_auth)
        assert r.status_code == 200 and r.content == manifest.canonical()
        wanted = list(reversed(manifest.blobs()))  # the order asked is the order sent
        r = api.post(f"{path}/blobs", json={"blobs": wanted}, headers=node_auth)
        reader = FrameReader()
        got = reader.feed(r.content)
        reader.finish()
        assert [d for d, _ in got] == wanted
        assert all(blob_digest(data) == d for d, data in got)
    assert not any(p.is_file() for p in (tmp_path / "artifacts").rglob("*"))
