"""Workspace volumes and a pod's working directory through the agent's Runner, with real
shims: confined (root: the workspace's uid, bind mounts) and unconfined (no isolation)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_agent_runner import kill_leftovers

from corral.agent.runner import Runner
from corral.agent.sandbox.policy import Isolation
from corral.wire.agent import ReplicaAssignment, VolumeMount
from support import replicas
from support.replicas import log, run_all

UID_BASE = 1_000_000
MOUNT = "/var/tmp/corral-volume-test/data"  # a private tmpfs in the view: nothing on the host


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    kill_leftovers(tmp_path)


def replica(rid: str, script: str, attempt: int = 1, **extra: Any) -> ReplicaAssignment:
    """Workspace team-a's (uid index 7) unless `workspace`/`uid_index` say otherwise."""
    workspace, uid_index = extra.pop("workspace", "team-a"), extra.pop("uid_index", 7)
    return replicas.replica(rid, workspace, uid_index, script, attempt=attempt, **extra)


def confined(state: Path, **kw: Any) -> Runner:
    return Runner(state, isolation=Isolation(state_dir=state, uid_base=UID_BASE), **kw)


def test_a_confined_volume_is_the_workspaces_and_outlives_the_replica(state: Path) -> None:
    volumes = [VolumeMount(name="data", path=MOUNT)]
    write = f'id -u; echo "$CORRAL_VOLUME_DATA"; echo kept > {MOUNT}/f.txt'
    read = f"cat {MOUNT}/f.txt; ls -ld {MOUNT} | cut -c1-10"
    runner = confined(state)
    run_all(
        runner,
        replica("r1", write, volumes=volumes),
        replica("r2", read, attempt=2, volumes=volumes),
    )
    assert [runner.records[r].exit_code for r in ("r1", "r2")] == [0, 0], log(state, "r1")
    assert log(state, "r1") == f"{UID_BASE + 7}\n{MOUNT}\n"
    assert log(state, "r2") == "kept\ndrwx------\n"
    host = state / "volumes" / "team-a" / "data"
    for directory in (host, host.parent):
        st = directory.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (UID_BASE + 7, 0o700)
    assert stat.S_IMODE((state / "volumes").stat().st_mode) == 0o711
    assert (host / "f.txt").read_text() == "kept\n"
    assert not os.path.exists(MOUNT)  # the mount point lived in the replica's /var/tmp only


def test_a_pods_working_directory_is_its_work_volume_across_replicas(state: Path) -> None:
    pod = ".pods/p-123"
    runner = confined(state)
    run_all(
        runner,
        replica(
            "r1",
            "pwd; cat given.txt; echo notes > mine.txt",
            work_volume=pod,
            files={"given.txt": "from files\n"},
        ),
        replica("r2", "pwd; cat mine.txt", attempt=2, work_volume=pod),
    )
    host = state / "volumes" / "team-a" / ".pods" / "p-123"
    assert [runner.records[r].exit_code for r in ("r1", "r2")] == [0, 0], log(state, "r1")
    assert log(state, "r1") == f"{host}\nfrom files\n"
    assert log(state, "r2") == f"{host}\nnotes\n"
    st = host.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (UID_BASE + 7, 0o700)
    assert (host / "mine.txt").stat().st_uid == UID_BASE + 7
    # Not the replica's own directory any more.
    assert not (state / "replicas" / "r1" / "work" / "mine.txt").exists()


def test_unconfined_volumes_are_named_in_the_env_and_linked_where_possible(
    state: Path,
) -> None:
    linked = state / "mnt" / "data"
    linked.parent.mkdir()
    volumes = [
        VolumeMount(name="data", path=str(linked)),
        VolumeMount(name="my-cache", path="/nonexistent-parent/cache"),
    ]
    script = 'echo "$CORRAL_VOLUME_DATA $CORRAL_VOLUME_MY_CACHE"; echo hi > data-link/x; pwd'
    runner = Runner(state, volume_root=state / "vols")
    a = replica("r1", f"ln -s {linked} data-link; {script}", volumes=volumes, work_volume=".pods/q")
    b = replica(
        "r2",
        'cat data-link/x; cat "$CORRAL_VOLUME_DATA/x"',
        attempt=2,
        volumes=volumes,
        work_volume=".pods/q",
    )
    run_all(runner, a, b)
    root = state / "vols" / "team-a"
    assert runner.records["r1"].exit_code == 0, log(state, "r1")
    assert os.readlink(linked) == str(root / "data")
    out = log(state, "r1")
    assert "corral: volume my-cache is" in out and "nothing is mounted" in out
    assert f"{root / 'data'} {root / 'my-cache'}\n" in out
    assert out.endswith(f"{root / '.pods' / 'q'}\n")
    assert log(state, "r2").endswith("names it)\nhi\nhi\n")
    assert stat.S_IMODE((root / "data").stat().st_mode) == 0o700
