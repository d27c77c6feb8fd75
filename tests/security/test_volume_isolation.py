"""Workspace volumes between tenants: one workspace never reaches another's, a planted link
never redirects the agent (root), and no name leaves `<root>/<workspace>`."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent import volumes
from corral.agent.runner import Runner
from corral.agent.sandbox.policy import Isolation
from corral.wire.agent import VolumeMount
from support.replicas import kill_leftovers, log, replica, run, run_all

UID_BASE = 1_000_000
MOUNT = "/var/tmp/corral-volume-test/data"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    kill_leftovers(tmp_path)


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A volume root every replica's view shows (as a fleet's shared mount is), not hidden
    below /tmp or the agent's state."""
    base = Path("/var/lib") / f"corral-volume-test-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755)
    yield base / "volumes"
    shutil.rmtree(base)


def confined(state: Path, root: Path) -> Runner:
    return Runner(state, isolation=Isolation(state_dir=state, uid_base=UID_BASE), volume_root=root)


def test_a_workspace_cannot_reach_anothers_volume(state: Path, shared_root: Path) -> None:
    data = [VolumeMount(name="data", path=MOUNT)]
    a_dir = shared_root / "team-a" / "data"
    probe = (
        f"ls {shared_root} || echo no-list-root; ls {shared_root}/team-a || echo no-enter-a; "
        f"cat {a_dir}/secret || echo no-read-a; ls {a_dir} || echo no-list-a; "
        f"cat {MOUNT}/secret || echo not-in-mine; echo mine > {MOUNT}/b.txt"
    )
    runner = confined(state, shared_root)
    run_all(
        runner,
        replica("a1", "team-a", 1, f"echo s3cret > {MOUNT}/secret", volumes=data),
        replica("b1", "team-b", 2, probe, volumes=data),
    )
    out = log(state, "b1")
    for refused in ("no-list-root", "no-enter-a", "no-read-a", "no-list-a", "not-in-mine"):
        assert refused in out, out
    assert "s3cret" not in out and "team-a" not in out.replace(str(shared_root / "team-a"), "")
    assert (a_dir / "secret").read_text() == "s3cret\n"
    assert not (a_dir / "b.txt").exists()
    assert (shared_root / "team-b" / "data" / "b.txt").stat().st_uid == UID_BASE + 2
    assert stat.S_IMODE(shared_root.stat().st_mode) == 0o711


def test_a_planted_symlink_does_not_redirect_the_agents_mkdir_or_chown(
    state: Path, shared_root: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    ws = shared_root / "team-a"
    ws.mkdir(parents=True)
    (ws / "data").symlink_to(victim)
    (ws / ".pods").symlink_to(victim)
    runner = confined(state, shared_root)
    run_all(
        runner,
        replica("r1", "team-a", 1, "echo ran", volumes=[VolumeMount(name="data", path=MOUNT)]),
        replica("r2", "team-a", 1, "echo ran", work_volume=".pods/p1"),
    )
    for rid in ("r1", "r2"):
        record = runner.records[rid]
        assert record.exit_code == 126 and "ran" not in log(state, rid)
        assert "symlink" in log(state, rid) and "refused" in log(state, rid)
    st = victim.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert list(victim.iterdir()) == []


def test_a_directory_of_another_uid_is_not_taken_over(state: Path, shared_root: Path) -> None:
    old = shared_root / "team-a" / "data"
    old.mkdir(parents=True)
    (old / "left.txt").write_text("old tenant's")
    shutil.chown(old, UID_BASE + 99, UID_BASE + 99)
    runner = confined(state, shared_root)
    volume = [VolumeMount(name="data", path=MOUNT)]
    run_all(runner, replica("r1", "team-a", 1, f"cat {MOUNT}/left.txt", volumes=volume))
    assert runner.records["r1"].exit_code == 126
    assert "belongs to uid 1000099" in log(state, "r1")
    assert old.stat().st_uid == UID_BASE + 99


@pytest.mark.parametrize(
    ("volume", "work_volume"),
    [
        ("../team-b", None),
        ("..", None),
        ("a/b", None),
        (None, "../team-b/data"),
        (None, "/etc"),
        (None, ".pods/../../x"),
        (None, "."),
    ],
)
def test_no_name_leaves_the_workspaces_directory(
    state: Path, shared_root: Path, volume: str | None, work_volume: str | None
) -> None:
    mounts = [VolumeMount(name=volume, path=MOUNT)] if volume else []
    runner = confined(state, shared_root)
    run_all(runner, replica("r1", "team-a", 1, "echo ran", volumes=mounts, work_volume=work_volume))
    record = runner.records["r1"]
    assert record.exit_code is None and record.error
    assert "cannot use the replica's volumes" in record.error
    assert not shared_root.exists()  # nothing created anywhere


def test_drop_never_follows_a_link(shared_root: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    os.close(volumes.ensure(shared_root, "team-a", "data", None))
    vol = shared_root / "team-a" / "data"
    (vol / "inner").symlink_to(keep)  # a link inside the volume
    (vol / "f").write_text("y")
    volumes.drop(shared_root, "team-a", "data")
    assert not vol.exists() and (keep / "precious").read_text() == "x"
    # A link in the volume's place: the link goes, its target stays.
    vol.symlink_to(keep)
    volumes.drop(shared_root, "team-a", "data")
    assert not vol.is_symlink() and (keep / "precious").exists()
    # The workspace's directory itself a link: nothing is touched through it.
    shutil.rmtree(shared_root / "team-a")
    (shared_root / "team-a").symlink_to(tmp_path)
    volumes.drop(shared_root, "team-a", "keep")
    assert (keep / "precious").exists()
    with pytest.raises(volumes.VolumeError):
        volumes.drop(shared_root, "team-a", "../x")


def test_a_volume_in_use_is_not_dropped(state: Path, shared_root: Path) -> None:
    runner = confined(state, shared_root)
    volume = [VolumeMount(name="data", path=MOUNT)]

    async def body() -> None:
        runner.load()
        runner.start(replica("r1", "team-a", 1, "sleep 30", volumes=volume))
        with pytest.raises(volumes.VolumeInUse):
            await runner.drop_volume("team-a", "data")
        await runner.drop_volume("team-b", "data")  # another workspace's: not in use
        runner.stop("r1")
        await asyncio.wait_for(runner.records["r1"].done.wait(), 20)
        await runner.drop_volume("team-a", "data")
        runner.close()

    run(body())
    assert not (shared_root / "team-a" / "data").exists()
