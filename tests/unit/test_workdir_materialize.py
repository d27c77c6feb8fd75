"""The node side of uploaded working directories: the agent's cache fetching from a fake
control plane (httpx.MockTransport), and the shim's copy of a cached tree into a directory
(as root: ownership is checked)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from corral.agent.artifacts import ArtifactCache, FetchError, prepare
from corral.agent.runner import STOPPED_WHILE_FETCHING, Runner
from corral.agent.shim import workload_argv
from corral.agent.workdir import WorkdirError, blob_path, load_code_plan, materialize
from corral.wire.agent import ReplicaAssignment
from corral.wire.artifacts import CHUNK_BYTES, BlobQuery, FileEntry, Manifest, blob_digest, frames

UID = 1_000_321


def tree(files: dict[str, bytes | str]) -> tuple[Manifest, dict[str, bytes]]:
    """A manifest of `files` (bytes: a file, its mode 0755 if it starts with #!; str: a
    symlink to that target) and its blobs."""
    blobs: dict[str, bytes] = {}
    entries = []
    for path in sorted(files):
        content = files[path]
        if isinstance(content, str):
            entries.append(FileEntry(path=path, link=content))
            continue
        chunks = []
        for i in range(0, len(content), CHUNK_BYTES):
            piece = content[i : i + CHUNK_BYTES]
            blobs[blob_digest(piece)] = piece
            chunks.append(blob_digest(piece))
        mode = 0o755 if content.startswith(b"#!") else 0o644
        entries.append(FileEntry(path=path, mode=mode, size=len(content), chunks=chunks))
    return Manifest(files=entries), blobs


def raw_manifest(paths: list[dict[str, object]]) -> bytes:
    """A manifest the pydantic model would refuse (the shim checks again by itself)."""
    return json.dumps({"version": 1, "files": paths}).encode()


def put_in_cache(cache: Path, manifest: bytes, blobs: dict[str, bytes]) -> Path:
    for digest, data in blobs.items():
        path = blob_path(cache / "blobs", digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (cache / "manifests").mkdir(parents=True, exist_ok=True)
    where = cache / "manifests" / "m.json"
    where.write_bytes(manifest)
    return where


def copy_into(target: Path, manifest: Path, cache: Path, **kw: object) -> object:
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return materialize(manifest, cache / "blobs", fd, **kw)  # type: ignore[arg-type]
    finally:
        os.close(fd)


def test_a_tree_is_copied_with_its_modes_links_and_the_workspaces_owner(tmp_path: Path) -> None:
    big = os.urandom(CHUNK_BYTES + 10)
    manifest, blobs = tree(
        {
            "data/big.bin": big,
            "empty": b"",
            "pkg/__init__.py": b"",
            "pkg/mod.py": b"X = 1\n",
            "run.sh": b"#!/bin/sh\necho hi\n",
            "latest": "data/big.bin",
        }
    )
    cache = tmp_path / "cache"
    where = put_in_cache(cache, manifest.canonical(), blobs)
    work = tmp_path / "work"
    work.mkdir()
    stats = copy_into(work, where, cache, uid=UID, gid=UID)
    assert (work / "data" / "big.bin").read_bytes() == big
    assert (work / "pkg" / "mod.py").read_text() == "X = 1\n"
    assert (work / "empty").read_bytes() == b""
    assert stat.S_IMODE((work / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((work / "pkg" / "mod.py").stat().st_mode) == 0o644
    assert os.readlink(work / "latest") == "data/big.bin"
    for path in (work / "data", work / "pkg", work / "run.sh", work / "data" / "big.bin"):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (UID, UID), path
    assert stats.files == 5 and stats.links == 1 and stats.bytes == len(big) + 24  # type: ignore[attr-defined]


def test_a_pods_directory_keeps_what_the_user_changed(tmp_path: Path) -> None:
    manifest, blobs = tree({"a.py": b"new\n", "b.py": b"b\n", "lib/x.py": b"x\n"})
    cache = tmp_path / "cache"
    where = put_in_cache(cache, manifest.canonical(), blobs)
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.py").write_text("edited by the user\n")
    (work / "lib").symlink_to(tmp_path / "elsewhere")  # the user's own choice
    (tmp_path / "elsewhere").mkdir()
    stats = copy_into(work, where, cache, keep_existing=True)
    assert (work / "a.py").read_text() == "edited by the user\n"
    assert (work / "b.py").read_text() == "b\n"
    assert list((tmp_path / "elsewhere").iterdir()) == []  # never written through the link
    assert sorted(stats.kept) == ["a.py", "lib/x.py"]  # type: ignore[attr-defined]


def test_without_keep_an_existing_file_is_an_error(tmp_path: Path) -> None:
    manifest, blobs = tree({"a.py": b"new\n"})
    cache = tmp_path / "cache"
    where = put_in_cache(cache, manifest.canonical(), blobs)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "a.py").write_text("old")
    with pytest.raises(WorkdirError, match=r"a\.py"):
        copy_into(tmp_path / "work", where, cache)


@pytest.mark.parametrize("path", ["a/../../x", "../x", "/etc/x", "a//b", "./x"])
def test_a_path_that_leaves_the_tree_is_refused_before_anything_is_written(
    tmp_path: Path, path: str
) -> None:
    data = b"evil\n"
    entries = [
        {"path": "a/ok", "mode": 0o644, "size": 3, "chunks": [blob_digest(b"ok\n")]},
        {"path": path, "mode": 0o644, "size": len(data), "chunks": [blob_digest(data)]},
    ]
    cache = tmp_path / "cache"
    where = put_in_cache(
        cache, raw_manifest(entries), {blob_digest(data): data, blob_digest(b"ok\n"): b"ok\n"}
    )
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    with pytest.raises(WorkdirError, match="not a relative path"):
        copy_into(work, where, cache)
    assert list(work.iterdir()) == []
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()


def test_a_file_below_a_symlink_of_the_tree_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    manifest, blobs = tree({"link": str(outside), "link/evil": b"evil\n"})
    cache = tmp_path / "cache"
    where = put_in_cache(cache, manifest.canonical(), blobs)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(WorkdirError, match="link"):
        copy_into(work, where, cache)
    assert list(outside.iterdir()) == []


def test_a_blob_shorter_than_its_entry_says_is_an_error(tmp_path: Path) -> None:
    entries = [{"path": "f", "mode": 0o644, "size": 10, "chunks": [blob_digest(b"abc")]}]
    cache = tmp_path / "cache"
    where = put_in_cache(cache, raw_manifest(entries), {blob_digest(b"abc"): b"abc"})
    (tmp_path / "work").mkdir()
    with pytest.raises(WorkdirError, match="3 bytes, expected 10"):
        copy_into(tmp_path / "work", where, cache)


# -- the agent's cache -------------------------------------------------------------------


class FakeServer:
    """The agent side of the artifacts API: a manifest is served to a workspace only if
    `allowed` has (workspace, digest)."""

    def __init__(self, manifest: Manifest, blobs: dict[str, bytes]) -> None:
        self.manifest = manifest
        self.blobs = blobs
        self.allowed: set[tuple[str, str]] = set()
        self.asked: list[str] = []  # blobs sent
        self.requests = 0
        self.corrupt = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        assert request.headers["authorization"] == "Bearer node-token"
        parts = request.url.path.split("/")  # /v1/agent/artifacts/{ws}/manifests/{d}[/blobs]
        workspace, digest = parts[4], parts[6]
        if (workspace, digest) not in self.allowed or digest != self.manifest.digest():
            return httpx.Response(404, json={"detail": "no such working directory"})
        if request.method == "GET":
            return httpx.Response(200, content=self.manifest.canonical())
        wanted = BlobQuery.model_validate_json(request.content).blobs
        self.asked += wanted
        items = [(d, self.blobs[d]) for d in wanted]
        if self.corrupt:
            items = [(d, b"x" + data[1:]) for d, data in items]
        return httpx.Response(200, content=b"".join(frames(items)))


def cache_for(tmp_path: Path, server: FakeServer, **kw: int) -> ArtifactCache:
    handler: Callable[[httpx.Request], httpx.Response] = server.handle
    return ArtifactCache(
        tmp_path / "artifacts",
        "http://corral.test",
        lambda: "node-token",
        transport=httpx.MockTransport(handler),
        **kw,  # type: ignore[arg-type]
    )


def example() -> tuple[Manifest, dict[str, bytes]]:
    return tree({"a.txt": b"a\n", "b.txt": b"b\n", "same.txt": b"a\n", "big": os.urandom(5000)})


def test_the_cache_fetches_each_blob_once_and_checks_it(tmp_path: Path) -> None:
    manifest, blobs = example()
    server = FakeServer(manifest, blobs)
    digest = manifest.digest()
    server.allowed.add(("team-a", digest))
    cache = cache_for(tmp_path, server)

    async def body() -> None:
        first = await cache.fetch("team-a", digest)
        assert first.fetched_blobs == 3  # a.txt and same.txt share one blob
        assert sorted(server.asked) == sorted(blobs)
        before = server.requests
        again = await cache.fetch("team-a", digest)
        assert (again.fetched_blobs, server.requests) == (0, before)  # nothing asked at all
        assert json.loads(again.manifest.read_bytes()) == json.loads(manifest.canonical())

    asyncio.run(body())
    for digest_, data in blobs.items():
        assert blob_path(tmp_path / "artifacts" / "blobs", digest_).read_bytes() == data
    assert stat.S_IMODE((tmp_path / "artifacts").stat().st_mode) == 0o700


def test_concurrent_fetches_of_one_tree_share_one_flight(tmp_path: Path) -> None:
    manifest, blobs = example()
    server = FakeServer(manifest, blobs)
    server.allowed.add(("team-a", manifest.digest()))
    cache = cache_for(tmp_path, server)

    async def body() -> None:
        await asyncio.gather(*(cache.fetch("team-a", manifest.digest()) for _ in range(5)))

    asyncio.run(body())
    assert server.requests == 2  # one manifest, one batch of blobs
    assert sorted(server.asked) == sorted(blobs)


def test_a_cached_tree_is_not_handed_to_a_workspace_the_server_did_not_allow(
    tmp_path: Path,
) -> None:
    manifest, blobs = example()
    server = FakeServer(manifest, blobs)
    digest = manifest.digest()
    server.allowed.add(("team-a", digest))
    cache = cache_for(tmp_path, server)

    async def body() -> None:
        await cache.fetch("team-a", digest)
        with pytest.raises(FetchError, match=r"no working directory .* of workspace team-b"):
            await cache.fetch("team-b", digest)
        # Allowed now (a replica of team-b's uses the same bytes): asked, no blob fetched.
        server.allowed.add(("team-b", digest))
        asked = len(server.asked)
        got = await cache.fetch("team-b", digest)
        assert got.fetched_blobs == 0 and len(server.asked) == asked

    asyncio.run(body())


def test_a_blob_whose_bytes_do_not_match_is_refused(tmp_path: Path) -> None:
    manifest, blobs = example()
    server = FakeServer(manifest, blobs)
    server.allowed.add(("team-a", manifest.digest()))
    server.corrupt = True
    cache = cache_for(tmp_path, server)
    with pytest.raises(FetchError, match="do not have that digest"):
        asyncio.run(cache.fetch("team-a", manifest.digest()))
    assert not (tmp_path / "artifacts" / "manifests" / f"{manifest.digest()}.json").exists()


def test_a_tree_over_the_nodes_limit_is_refused(tmp_path: Path) -> None:
    manifest, blobs = example()
    server = FakeServer(manifest, blobs)
    server.allowed.add(("team-a", manifest.digest()))
    cache = cache_for(tmp_path, server, max_bytes=1000)
    with pytest.raises(FetchError, match="this node takes at most 1000"):
        asyncio.run(cache.fetch("team-a", manifest.digest()))
    assert server.asked == []


# -- the runner's preparation --------------------------------------------------------------


def assignment(rid: str, **extra: object) -> ReplicaAssignment:
    return ReplicaAssignment(
        replica_id=rid,
        job="train",
        workspace="team-a",
        attempt=1,
        rank=0,
        argv=["sh", "-c", "echo ran"],
        env={},
        **extra,  # type: ignore[arg-type]
    )


def test_the_shim_is_told_the_servers_wheel_index_only_when_it_serves_one(
    tmp_path: Path,
) -> None:
    cache = cache_for(tmp_path, FakeServer(*example()))
    env = {"requirements": ["tinypkg"]}
    for rid, wheelhouse in (("with", True), ("without", False)):
        (tmp_path / rid).mkdir()
        a = assignment(rid, environment=env, wheelhouse=wheelhouse)
        asyncio.run(prepare(cache, a, tmp_path / rid))
    plan = load_code_plan(tmp_path / "with")
    assert plan is not None and plan.index_url == "http://corral.test/v1/wheels/simple/"
    assert plan.manifest is None  # no working directory: nothing fetched
    argv = workload_argv(tmp_path / "with", assignment("with", environment=env).model_dump())
    built = json.loads(argv[argv.index("corral.agent.envbuild") + 1])
    assert built["index_url"] == plan.index_url and argv[-3:] == ["sh", "-c", "echo ran"]
    assert load_code_plan(tmp_path / "without").index_url is None  # type: ignore[union-attr]


def test_a_stop_while_the_tree_is_fetched_ends_the_replica_unstarted(tmp_path: Path) -> None:
    manifest, blobs = example()
    server = FakeServer(manifest, blobs)
    server.allowed.add(("team-a", manifest.digest()))
    asked = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        asked.set()
        await release.wait()  # a control plane that does not answer yet
        return server.handle(request)

    cache = ArtifactCache(
        tmp_path / "artifacts",
        "http://corral.test",
        lambda: "node-token",
        transport=httpx.MockTransport(slow),
    )
    runner = Runner(tmp_path, cache=cache)

    async def body() -> None:
        runner.load()
        assert runner.start(assignment("r1", workdir=manifest.digest()))
        await asyncio.wait_for(asked.wait(), 10)
        runner.stop("r1")
        record = runner.records["r1"]
        await asyncio.wait_for(record.done.wait(), 10)
        release.set()
        # The fetch goes on (other replicas may wait for it) and ends; the replica must not
        # start when it does.
        cached = tmp_path / "artifacts" / "manifests" / f"{manifest.digest()}.json"
        async with asyncio.timeout(10):
            while not cached.exists():
                await asyncio.sleep(0.01)
        for _ in range(10):
            await asyncio.sleep(0)
        assert (record.exit_code, record.error) == (None, STOPPED_WHILE_FETCHING)
        runner.close()

    asyncio.run(body())
    replica = tmp_path / "replicas" / "r1"
    assert json.loads((replica / "exit.json").read_text())["error"] == STOPPED_WHILE_FETCHING
    assert not (replica / "shim.json").exists() and not (replica / "output.log").exists()


def test_a_cache_left_by_an_earlier_boot_is_dropped_not_trusted(tmp_path: Path) -> None:
    manifest, blobs = example()
    server = FakeServer(manifest, blobs)
    server.allowed.add(("team-a", manifest.digest()))
    asyncio.run(cache_for(tmp_path, server).fetch("team-a", manifest.digest()))
    root = tmp_path / "artifacts"
    # Same boot, a new agent: everything is still there and nothing is fetched again.
    again = asyncio.run(cache_for(tmp_path, server).fetch("team-a", manifest.digest()))
    assert again.fetched_blobs == 0
    # Another boot (or a power loss): blobs written unsynced may be torn; all fetched anew.
    (root / "boot_id").write_text("an-earlier-boot\n")
    some = next(iter(blobs))
    blob_path(root / "blobs", some).write_bytes(b"torn")
    after = asyncio.run(cache_for(tmp_path, server).fetch("team-a", manifest.digest()))
    assert after.fetched_blobs == len(blobs)
    assert blob_path(root / "blobs", some).read_bytes() == blobs[some]
    assert sorted(p.name for p in root.iterdir()) == ["blobs", "boot_id", "manifests"]


def _write_as(uid: int, path: Path) -> int:
    """errno of opening `path` for writing as `uid` in a child (0: it could)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as exc:
            code = exc.errno or 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_confined_replicas_files_are_read_only_links_to_one_copy_per_workspace(
    tmp_path: Path,
) -> None:
    manifest, blobs = tree(
        {"pkg/mod.py": b"X = 1\n", "big.bin": os.urandom(CHUNK_BYTES + 7), "empty": b""}
    )
    cache = tmp_path / "cache"
    where = put_in_cache(cache, manifest.canonical(), blobs)
    replicas = []
    for name, workspace in (("r0", "team-a"), ("r1", "team-a"), ("r2", "team-b")):
        target = tmp_path / name
        target.mkdir()
        os.chown(target, UID, UID)
        stats = copy_into(target, where, cache, uid=UID, gid=UID, links=cache / "links" / workspace)
        assert stats.linked == 2 and stats.files == 3  # type: ignore[attr-defined]
        replicas.append(target)
    a0, a1, b = (r / "big.bin" for r in replicas)
    assert a0.read_bytes() == a1.read_bytes() == b.read_bytes()
    # One copy per workspace on the node: a second replica makes links, not a copy ...
    assert a0.stat().st_ino == a1.stat().st_ino
    # ... and another workspace never shares an inode (its link count would tell).
    assert a0.stat().st_ino != b.stat().st_ino
    st = a0.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)
    # The replica's user reads it but cannot change the shared copy in place ...
    assert _write_as(UID, a0) == 13  # EACCES
    # ... while the directories are its own: it may replace the file with its own.
    assert (replicas[0] / "pkg").stat().st_uid == UID
    assert (replicas[0] / "empty").stat().st_uid == UID  # empty files are plain copies
