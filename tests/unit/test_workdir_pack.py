"""Packing a working directory: git's ignore rules, symlinks, modes, chunks, the hash cache
and the limits (client/workdir.py)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from corral.client.workdir import PackedTree, WorkdirError, pack_workdir
from corral.wire.artifacts import CHUNK_BYTES

OLD_NS = 1_600_000_000 * 10**9  # a file last changed long ago: the cache may trust it


def write(root: Path, rel: str, data: str | bytes = "x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def paths(tree: PackedTree) -> list[str]:
    return [f.path for f in tree.manifest.files]


def test_gitignore_rules_at_every_level_with_negation_and_corralignore(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, ".gitignore", "*.log\n!keep.log\nbuild/\n/top.txt\n")
    write(root, "a.log")
    write(root, "keep.log")
    write(root, "top.txt")
    write(root, "build/out.bin")
    write(root, "src/build/x")  # `build/` has no slash in front: any depth
    write(root, "src/top.txt")  # `/top.txt` is anchored to the top
    write(root, "src/main.py")
    # A deeper .gitignore: patterns relative to its directory, and it wins over the top's.
    write(root, "src/.gitignore", "/main.py\n!debug.log\ngen/\n")
    write(root, "src/debug.log")
    write(root, "src/gen/a.py")
    write(root, "src/pkg/main.py")  # `/main.py` in src/.gitignore is src/main.py only
    # The .corralignore has the last word: leaves out data git tracks, takes back a log.
    write(root, ".corralignore", "data/\n!a.log\n")
    write(root, "data/big.bin")
    write(root, ".git/HEAD", "ref: refs/heads/main\n")
    write(root, "sub/.git", "gitdir: ../.git/modules/sub\n")  # a submodule's .git file
    write(root, "sub/lib.py")

    tree = pack_workdir(root)

    assert paths(tree) == [
        ".corralignore",
        ".gitignore",
        "a.log",
        "keep.log",
        "src/.gitignore",
        "src/debug.log",
        "src/pkg/main.py",
        "src/top.txt",
        "sub/lib.py",
    ]


def test_an_ignored_directory_is_not_entered(tmp_path: Path) -> None:
    # As in git: a file under an excluded directory cannot be taken back.
    root = tmp_path / "proj"
    write(root, ".gitignore", "out/\n!out/keep.txt\n")
    write(root, "out/keep.txt")
    write(root, "in.txt")
    assert paths(pack_workdir(root)) == [".gitignore", "in.txt"]


def test_a_subdirectory_of_a_repository_gets_the_gitignores_above_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    write(repo, ".gitignore", "__pycache__/\n*.pyc\n/top-only\n!keep.pyc\n")
    write(repo, "sub/.gitignore", "proj/local.txt\n")
    proj = repo / "sub" / "proj"
    write(proj, "main.py")
    write(proj, "a.pyc")
    write(proj, "keep.pyc")
    write(proj, "__pycache__/main.cpython-311.pyc")
    write(proj, "local.txt")
    write(proj, "top-only")  # anchored at the repository's top: not this one
    # The tree's own rules still come after the ones above it.
    write(proj, ".gitignore", "!a.pyc\n")

    assert paths(pack_workdir(proj)) == [".gitignore", "a.pyc", "keep.pyc", "main.py", "top-only"]

    # The repository's own exclude file counts too, below the .gitignore files.
    write(repo, ".git/info/exclude", "sub/proj/main.py\n*.log\n")
    write(proj, "debug.log")
    assert paths(pack_workdir(proj)) == [".gitignore", "a.pyc", "keep.pyc", "top-only"]
    write(repo, "x.log")
    assert "x.log" not in paths(pack_workdir(repo))

    # Outside a repository git reads no .gitignore above the tree, and neither does this.
    outer = tmp_path / "outer"
    write(outer, ".gitignore", "*.txt\n")
    write(outer, "proj/a.txt")
    assert paths(pack_workdir(outer / "proj")) == ["a.txt"]


def test_symlinks_are_recorded_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path, "secret/key", "do not send")
    root = tmp_path / "proj"
    write(root, "real.txt", "hello")
    os.symlink(outside, root / "key")
    os.symlink(outside.parent, root / "dir-link")
    os.symlink("real.txt", root / "rel-link")

    tree = pack_workdir(root)

    links = {f.path: f for f in tree.manifest.files if f.link is not None}
    assert {p: f.link for p, f in links.items()} == {
        "dir-link": str(outside.parent),
        "key": str(outside),
        "rel-link": "real.txt",
    }
    assert all(f.chunks == [] and f.size == 0 for f in links.values())
    # Nothing from outside the tree is among the blobs.
    assert hashlib.sha256(b"do not send").hexdigest() not in tree.manifest.blobs()


def test_only_regular_files_and_the_executable_bit(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    run = write(root, "run.sh", "#!/bin/sh\n")
    run.chmod(0o700)
    write(root, "data.txt").chmod(0o664)
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    try:
        tree = pack_workdir(root)
    finally:
        sock.close()
    assert {f.path: f.mode for f in tree.manifest.files} == {"data.txt": 0o644, "run.sh": 0o755}


def test_a_big_file_is_cut_into_chunks(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    data = os.urandom(CHUNK_BYTES) + b"tail" * 1000
    write(root, "weights.bin", data)
    write(root, "empty", b"")

    tree = pack_workdir(root)

    big, empty = {f.path: f for f in tree.manifest.files}["weights.bin"], tree.manifest.files[0]
    assert big.size == len(data)
    assert big.chunks == [
        hashlib.sha256(data[:CHUNK_BYTES]).hexdigest(),
        hashlib.sha256(data[CHUNK_BYTES:]).hexdigest(),
    ]
    assert empty.path == "empty" and empty.chunks == [] and empty.size == 0
    # The upload reads each chunk back from its place in the file.
    assert tree.read_blob(big.chunks[1]) == data[CHUNK_BYTES:]
    assert tree.read_bytes == len(data)


def test_the_cache_spares_reading_unchanged_files(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    cache = tmp_path / "cache"
    stable = write(root, "stable.txt", "aaaa")
    os.utime(stable, ns=(OLD_NS, OLD_NS))
    first = pack_workdir(root, cache_dir=cache)
    assert first.read_bytes == 4

    # Same size, same mtime, same inode: the cache answers, the file is not read. Proved by
    # changing its bytes behind the stamps' back: the cached chunk is what comes out.
    stable.write_bytes(b"bbbb")
    os.utime(stable, ns=(OLD_NS, OLD_NS))
    second = pack_workdir(root, cache_dir=cache)
    assert second.read_bytes == 0
    assert second.digest == first.digest
    # Without the cache the new bytes are read: the cache was what kept the old answer.
    assert pack_workdir(root).digest != first.digest

    # A real change moves the mtime: read again, and only that file.
    write(root, "other.txt", "cc")
    os.utime(root / "other.txt", ns=(OLD_NS, OLD_NS))
    pack_workdir(root, cache_dir=cache)
    stable.write_bytes(b"dddd")
    third = pack_workdir(root, cache_dir=cache)
    assert third.read_bytes == 4
    assert third.digest != first.digest
    assert {f.path: f.chunks for f in third.manifest.files}["stable.txt"] == [
        hashlib.sha256(b"dddd").hexdigest()
    ]


def test_a_file_changed_just_now_is_not_trusted_to_the_cache(tmp_path: Path) -> None:
    # Its stamp may not move if it changes again within the same clock tick.
    root = tmp_path / "proj"
    cache = tmp_path / "cache"
    write(root, "fresh.txt", "new")
    pack_workdir(root, cache_dir=cache)
    assert pack_workdir(root, cache_dir=cache).read_bytes == 3


def test_too_many_files_names_the_biggest_directories(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    for i in range(8):
        write(root, f"data/{i}.csv")
    write(root, "src/a.py")
    write(root, "train.py")
    with pytest.raises(WorkdirError) as caught:
        pack_workdir(root, max_files=5)
    message = str(caught.value)
    assert "\n" not in message
    assert "has 10 files to send, more than the 5" in message
    assert "data/ (8 files, 8 B), src/ (1 files, 1 B)" in message
    assert "a .corralignore line like `data/`" in message


def test_too_many_bytes_names_the_biggest_directory(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, "ckpt/model.bin", b"0" * 5000)
    write(root, "src/a.py", b"0" * 10)
    with pytest.raises(WorkdirError) as caught:
        pack_workdir(root, max_bytes=4000)
    message = str(caught.value)
    assert "has 5.0 kB to send, more than the 4.0 kB" in message
    assert message.index("ckpt/") < message.index("src/")
    assert "`ckpt/`" in message
    # What is left out does not count.
    write(root, ".corralignore", "ckpt/\n")
    assert pack_workdir(root, max_bytes=4000).total_bytes == 10 + len("ckpt/\n")


def test_not_a_directory(tmp_path: Path) -> None:
    file = write(tmp_path, "file.txt")
    with pytest.raises(WorkdirError, match=r"file\.txt is not a directory"):
        pack_workdir(file)
    with pytest.raises(WorkdirError, match="is not a directory"):
        pack_workdir(tmp_path / "missing")


def test_the_digest_depends_on_content_not_on_where_or_when(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        write(root, "x/y.txt", "same")
        write(root, "z.txt", "same too")
    os.utime(b / "z.txt", ns=(OLD_NS, OLD_NS))
    assert pack_workdir(a).digest == pack_workdir(b).digest
    write(b, "z.txt", "different")
    assert pack_workdir(a).digest != pack_workdir(b).digest
