"""Uploaded working directories between tenants, through the agent's Runner and real confined
shims (root): a tree cannot make the agent write outside the replica's working directory,
the node's cache is not in a replica's view, and a tree cached for one workspace is not
handed to another without the control plane's word."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.agent.artifacts import ArtifactCache
from corral.agent.runner import Runner
from corral.agent.sandbox.policy import Isolation
from corral.agent.workdir import blob_path
from corral.wire.artifacts import BlobQuery, FileEntry, Manifest, blob_digest, frames
from support.replicas import kill_leftovers, log, replica, run_all

UID_BASE = 1_000_000


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    kill_leftovers(tmp_path)


class Store:
    """The control plane's agent side: (workspace, digest) -> manifest, and the blobs."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.blobs: dict[str, bytes] = {}

    def add(self, workspace: str, files: dict[str, bytes | str]) -> str:
        entries = []
        for path in sorted(files):
            content = files[path]
            if isinstance(content, str):
                entries.append(FileEntry(path=path, link=content))
                continue
            digest = blob_digest(content)
            self.blobs[digest] = content
            chunks = [digest] if content else []
            entries.append(FileEntry(path=path, size=len(content), chunks=chunks))
        manifest = Manifest(files=entries)
        self.manifests[(workspace, manifest.digest())] = manifest.canonical()
        return manifest.digest()

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        key = (parts[4], parts[6])
        if key not in self.manifests:
            return httpx.Response(404, json={"detail": "not found"})
        if request.method == "GET":
            return httpx.Response(200, content=self.manifests[key])
        wanted = BlobQuery.model_validate_json(request.content).blobs
        return httpx.Response(200, content=b"".join(frames((d, self.blobs[d]) for d in wanted)))


def confined(state: Path, store: Store) -> Runner:
    cache = ArtifactCache(
        state / "artifacts",
        "http://corral.test",
        lambda: "node-token",
        transport=httpx.MockTransport(store.handle),
    )
    return Runner(state, isolation=Isolation(state_dir=state, uid_base=UID_BASE), cache=cache)


def test_a_file_below_a_link_of_the_tree_is_never_written_through_it(state: Path) -> None:
    outside = state / "outside"
    outside.mkdir()
    store = Store()
    digest = store.add("team-a", {"link": str(outside), "link/evil": b"owned\n"})
    runner = confined(state, store)
    run_all(runner, replica("r1", "team-a", 7, "echo ran", job="train", workdir=digest))
    record = runner.records["r1"]
    assert record.exit_code == 126, log(state, "r1")
    assert record.error is not None and "cannot copy the working directory: link" in record.error
    assert "ran" not in log(state, "r1")
    assert list(outside.iterdir()) == []


def test_a_path_climbing_out_of_the_tree_never_reaches_the_node(state: Path) -> None:
    store = Store()
    evil = b"owned\n"
    store.blobs[blob_digest(evil)] = evil
    raw = {"version": 1, "files": [{"path": "a/../../x", "size": 6, "chunks": [blob_digest(evil)]}]}
    body = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    digest = blob_digest(body)
    store.manifests[("team-a", digest)] = body  # a server that would serve it anyway
    runner = confined(state, store)
    run_all(runner, replica("r1", "team-a", 7, "echo ran", job="train", workdir=digest))
    record = runner.records["r1"]
    assert record.exit_code is None
    assert record.error is not None
    assert record.error.startswith("cannot fetch the working directory: the manifest of")
    assert not (state / "replicas" / "x").exists() and not (state / "x").exists()


def test_the_node_cache_is_not_in_a_confined_replicas_view(state: Path) -> None:
    store = Store()
    secret = b"team-a's code\n"
    digest = store.add("team-a", {"train.py": secret})
    blob = blob_path(state / "artifacts" / "blobs", blob_digest(secret))
    script = (
        f"cat train.py; ls {state / 'artifacts'} 2>/dev/null && echo LISTED; "
        f"cat {blob} 2>/dev/null && echo READ; echo done"
    )
    runner = confined(state, store)
    run_all(runner, replica("r1", "team-a", 7, script, job="train", workdir=digest))
    assert runner.records["r1"].exit_code == 0, log(state, "r1")
    assert blob.read_bytes() == secret  # it is in the cache, on the host
    assert log(state, "r1").endswith("team-a's code\ndone\n")


def test_a_tree_cached_for_one_workspace_is_not_given_to_another(state: Path) -> None:
    store = Store()
    digest = store.add("team-a", {"secret.txt": b"team-a only\n"})
    runner = confined(state, store)
    run_all(
        runner,
        replica("r1", "team-a", 7, "cat secret.txt", job="train", workdir=digest),
        # Same digest, another workspace: the control plane does not vouch for it.
        replica("r2", "team-b", 8, "cat secret.txt", job="train", workdir=digest),
    )
    assert runner.records["r1"].exit_code == 0, log(state, "r1")
    assert log(state, "r1").endswith("\nteam-a only\n")
    other = runner.records["r2"]
    assert other.exit_code is None
    assert other.error is not None
    assert "cannot fetch the working directory: the server has no working directory" in other.error
    assert log(state, "r2") == f"corral: {other.error}\n"
    assert not (state / "replicas" / "r2" / "work" / "secret.txt").exists()
