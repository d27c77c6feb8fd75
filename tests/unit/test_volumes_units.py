"""Volume paths on a node: names, relative paths, mount paths, the plan (agent/volumes.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from corral.agent import volumes
from corral.agent.volumes import Mount, Plan, VolumeError


def test_a_plan_puts_every_volume_below_the_workspace() -> None:
    plan = volumes.plan(Path("/v"), "team-a", [("data", "/data"), ("my-cache", "/c")], ".pods/p1")
    assert plan.mounts == (
        Mount("data", "/v/team-a/data", "/data"),
        Mount("my-cache", "/v/team-a/my-cache", "/c"),
    )
    assert plan.work_host() == "/v/team-a/.pods/p1"
    assert plan.relatives() == ["data", "my-cache", ".pods/p1"]
    assert plan.environment(confined=True) == {
        "CORRAL_VOLUME_DATA": "/data",
        "CORRAL_VOLUME_MY_CACHE": "/c",
    }
    assert plan.environment(confined=False)["CORRAL_VOLUME_DATA"] == "/v/team-a/data"
    assert Plan.from_json(plan.to_json()) == plan
    assert volumes.plan(Path("/v"), "w", [], None).work_host() is None


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../b", "", "Data", ".pods", "-a", "a" * 64])
def test_a_volume_name_is_one_plain_component(name: str) -> None:
    with pytest.raises(VolumeError, match="volume name"):
        volumes.check_name(name)


@pytest.mark.parametrize(
    "relative", ["..", "../x", ".pods/../../x", "/etc", "a//b", "a/./b", "", "a/b/c/d/e", "a b"]
)
def test_a_work_volume_cannot_leave_the_workspace(relative: str) -> None:
    with pytest.raises(VolumeError, match="work_volume"):
        volumes.check_relative(relative)


@pytest.mark.parametrize("path", ["data", "/", "/a/../b", "/a/", "//a", "/a/./b"])
def test_a_mount_path_is_plain_and_absolute(path: str) -> None:
    with pytest.raises(VolumeError, match="path"):
        volumes.plan(Path("/v"), "w", [("data", path)], None)


def test_bad_workspaces_and_duplicate_paths_are_refused() -> None:
    with pytest.raises(VolumeError, match="workspace"):
        volumes.plan(Path("/v"), "../w", [], None)
    with pytest.raises(VolumeError, match="two volumes"):
        volumes.plan(Path("/v"), "w", [("a", "/d"), ("b", "/d")], None)
    with pytest.raises(VolumeError):
        volumes.host_path(Path("/v"), "w", "../x")
    assert volumes.host_path(Path("/v"), "w", ".pods/p") == Path("/v/w/.pods/p")


def test_ensure_makes_the_chain_the_workspaces_and_the_root_passable_only(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "root"
    fd = volumes.ensure(root, "team-a", ".pods/p1", uid=1_000_005)
    os.close(fd)
    assert stat.S_IMODE(root.stat().st_mode) == 0o711
    assert stat.S_IMODE((tmp_path / "deep").stat().st_mode) == 0o755
    for d in (root / "team-a", root / "team-a" / ".pods", root / "team-a" / ".pods" / "p1"):
        st = d.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1_000_005, 1_000_005, 0o700)
    os.close(volumes.open_existing(root, "team-a", ".pods/p1", 1_000_005))
    with pytest.raises(VolumeError, match="not the workspace's"):
        volumes.open_existing(root, "team-a", ".pods/p1", 1_000_006)
