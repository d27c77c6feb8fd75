"""Uploading a packed working directory to the real control plane (client/artifacts.py):
only what the store lacks travels, in batches, and the tree's digest is its content's."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from corral.client.artifacts import Uploaded, upload_tree
from corral.client.errors import ApiError
from corral.client.workdir import WorkdirError, pack_workdir
from corral.wire.artifacts import CHUNK_BYTES
from support.app import in_process
from support.cli import ADMIN, Cli

MANIFESTS = "/v1/workspaces/default/artifacts/manifests"


class Counting(httpx.BaseTransport):
    """The app's transport, counting the bytes of each request by path."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.url.path, len(request.read())))
        return self.inner.handle_request(request)

    def posts(self, suffix: str) -> list[int]:
        return [n for path, n in self.sent if path.endswith(suffix)]


def make_tree(root: Path, files: int = 20, size: int = 3000) -> None:
    for i in range(files):
        path = root / f"d{i % 4}" / f"f{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def upload(cli: Cli, root: Path, **kwargs: object) -> tuple[Uploaded, str]:
    tree = pack_workdir(root)
    with cli.sdk() as client:
        return upload_tree(client, tree, **kwargs), tree.digest  # type: ignore[arg-type]


def test_an_unchanged_file_is_never_uploaded_twice(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_tree(root)
    counting = Counting(cli.transport)
    cli.transport = counting

    first, digest = upload(cli, root)
    assert first.digest == digest
    assert (first.files, first.bytes, first.uploaded_bytes) == (20, 60_000, 60_000)
    stored = cli.server.get(f"{MANIFESTS}/{digest}", headers=ADMIN)
    assert stored.status_code == 200
    assert stored.json() == {"digest": digest, "files": 20, "bytes": 60_000}

    # The same tree again: one question, whether the store has that manifest.
    counting.sent.clear()
    again, same = upload(cli, root)
    assert same == digest and again.digest == digest and again.uploaded_bytes == 0
    assert [path for path, _ in counting.sent] == [f"{MANIFESTS}/{digest}"]

    # One file changed: only its bytes travel.
    (root / "d1" / "f5.txt").write_bytes(b"changed" * 100)
    counting.sent.clear()
    third, changed = upload(cli, root)
    assert changed != digest and third.digest == changed
    assert third.uploaded_bytes == 700
    assert counting.posts("/blobs") and sum(counting.posts("/blobs")) < 1000
    assert cli.server.get(f"{MANIFESTS}/{changed}", headers=ADMIN).json()["bytes"] == 57_700


def test_blobs_go_in_batches_and_progress_is_reported(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_tree(root, files=10, size=10_000)
    big = root / "weights.bin"
    big.write_bytes(os.urandom(CHUNK_BYTES + 100))  # two chunks
    counting = Counting(cli.transport)
    cli.transport = counting
    seen: list[tuple[int, int]] = []

    done, digest = upload(
        cli, root, batch_bytes=40_000, progress=lambda sent, total: seen.append((sent, total))
    )

    total = 100_000 + CHUNK_BYTES + 100
    assert done.uploaded_bytes == total and done.digest == digest
    # Frames of 72 header bytes and the blob: three small blobs fit in 40 kB; a blob larger
    # than a batch goes alone, and the big file's tail cannot join it.
    frame = 72 + 10_000
    assert counting.posts("/blobs") == [
        3 * frame,
        3 * frame,
        3 * frame,
        frame,
        72 + CHUNK_BYTES,
        172,
    ]
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)


def test_a_file_changed_after_packing_fails_the_upload_clearly(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_tree(root, files=2)
    tree = pack_workdir(root)
    (root / "d0" / "f0.txt").write_bytes(b"x" * 3000)
    with cli.sdk() as client, pytest.raises(WorkdirError) as caught:
        upload_tree(client, tree)
    assert str(caught.value) == "d0/f0.txt changed while it was being uploaded; run again"
    # Nothing names that tree on the server.
    assert cli.server.get(f"{MANIFESTS}/{tree.digest}", headers=ADMIN).status_code == 404


def test_a_tree_over_the_servers_limit_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_tree(root, files=2)
    db = f"sqlite:///{tmp_path / 'small.db'}"
    with in_process(db, tmp_path / "server", workdir_max_bytes=5000) as server:
        (tmp_path / "home").mkdir()
        cli = Cli(server, tmp_path / "home")
        with cli.sdk() as client, pytest.raises(ApiError) as caught:
            upload_tree(client, pack_workdir(root))
    assert caught.value.status in (413, 422)
    assert "this server takes at most" in caught.value.message
