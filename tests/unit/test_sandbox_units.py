"""The sandbox's pure plan and its symlink-proof file writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.agent.sandbox.files import UnsafePath, read_small_nofollow, write_files
from corral.agent.sandbox.plan import Reveal, reveals, workload_uid


def open_except(*blocked: str):  # type: ignore[no-untyped-def]
    return lambda d: d not in blocked


@pytest.mark.parametrize(
    ("needed", "blocked", "expected"),
    [
        # Nothing blocked: nothing to mount.
        (["/var/lib/corral/r1/work"], (), []),
        # One blocked ancestor: a tmpfs there, the leaf bound back.
        (["/root/.corral/r1/work"], ("/root",), [Reveal("/root", ("/root/.corral/r1/work",))]),
        # Two leaves under one blocked directory, one of them inside the other: one bind.
        (
            ["/root/py", "/root/py/lib", "/root/.corral/work"],
            ("/root", "/root/.corral"),
            [Reveal("/root", ("/root/.corral/work", "/root/py"))],
        ),
        # Blocked deeper only: the outermost blocked directory is the one overmounted.
        (
            ["/srv/state/replicas/r1/work", "/srv/state/homes/7"],
            ("/srv/state",),
            [Reveal("/srv/state", ("/srv/state/homes/7", "/srv/state/replicas/r1/work"))],
        ),
        # Separate blocked trees: one mount each.
        (
            ["/a/x/1", "/b/y/2"],
            ("/a", "/b/y"),
            [Reveal("/a", ("/a/x/1",)), Reveal("/b/y", ("/b/y/2",))],
        ),
    ],
)
def test_reveals(needed: list[str], blocked: tuple[str, ...], expected: list[Reveal]) -> None:
    assert reveals(needed, open_except(*blocked)) == expected


def test_a_leaf_is_never_its_own_blocked_directory() -> None:
    # The leaf's own permissions stay in force: a 0700 work dir of the workload's user is
    # entered by that user, not replaced.
    assert reveals(["/x/work"], open_except("/x/work")) == []


def test_workload_uids_are_per_workspace_and_never_root() -> None:
    assert workload_uid(1_000_000, 1) == 1_000_001
    assert workload_uid(1_000_000, 2) != workload_uid(1_000_000, 1)
    with pytest.raises(ValueError):
        workload_uid(1_000_000, 0)


def test_files_are_written_inside_and_never_through_a_symlink(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    target = tmp_path / "victim.txt"
    target.write_text("theirs")
    (work / "planted").symlink_to(target)
    with pytest.raises(UnsafePath):
        write_files(work, {"planted": "mine"})
    assert target.read_text() == "theirs"
    # A planted directory symlink is not followed either.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (work / "dir").symlink_to(elsewhere)
    with pytest.raises(UnsafePath):
        write_files(work, {"dir/x.py": "print(1)"})
    assert list(elsewhere.iterdir()) == []
    write_files(work, {"a/b/run.sh": "#!/bin/sh\necho hi\n", "c.txt": "x"})
    assert (work / "a" / "b" / "run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert os.access(work / "a" / "b" / "run.sh", os.X_OK)
    with pytest.raises(ValueError):
        write_files(work, {"../escape": "x"})


def test_small_reads_refuse_symlinks_fifos_and_stop_at_the_bound(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    (tmp_path / "link").symlink_to(secret)
    with pytest.raises(UnsafePath):
        read_small_nofollow(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafePath):
        read_small_nofollow(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 100_000)
    assert len(read_small_nofollow(tmp_path / "big", limit=10) or b"") == 10
    assert read_small_nofollow(tmp_path / "missing") is None


def test_a_planted_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / "a.txt")
    with pytest.raises(UnsafePath, match="not a regular file"):
        write_files(work, {"a.txt": "hello"})
    # An existing regular file is replaced whole, not appended to.
    (work / "b.txt").write_text("a much longer old content")
    write_files(work, {"b.txt": "new"})
    assert (work / "b.txt").read_text() == "new"


def test_the_environment_a_confined_replica_inherits_is_an_allow_list() -> None:
    from corral.agent.sandbox.policy import Isolation

    agent_env = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "NCCL_IB_HCA": "mlx5",
        "GLOO_SOCKET_IFNAME": "eth0",
        "HF_TOKEN": "operator",
        "AWS_SECRET_ACCESS_KEY": "x",
        "LD_PRELOAD": "/evil.so",
        "PYTHONPATH": "/evil",
        "NOTIFY_SOCKET": "/run/systemd/notify",
    }
    env = Isolation(state_dir=Path("/x")).base_environment(agent_env)
    assert set(env) == {"PATH", "LANG", "LC_ALL", "NCCL_IB_HCA", "GLOO_SOCKET_IFNAME"}
    assert env["PATH"].endswith(":/usr/bin")


def test_only_host_paths_every_ancestor_of_which_is_searchable_are_shown(tmp_path: Path) -> None:
    from corral.agent.sandbox.init import reachable

    (tmp_path / "open" / "app").mkdir(parents=True)
    (tmp_path / "shut" / "app").mkdir(parents=True)
    shut = str(tmp_path / "shut")
    paths = [str(tmp_path / "open" / "app"), str(tmp_path / "shut" / "app"), "relative", "/nope"]
    assert reachable(paths, lambda d: d != shut) == [str(tmp_path / "open" / "app")]
    # A link is followed by the bind as root: refused, wherever it points.
    (tmp_path / "open" / "link").symlink_to(tmp_path / "shut" / "app")
    (tmp_path / "open" / "self").symlink_to(tmp_path / "open" / "app")
    links = [str(tmp_path / "open" / "link"), str(tmp_path / "open" / "self")]
    assert reachable(links, lambda d: True) == []
    # The host's /tmp itself is every tenant's; outside /tmp nothing needs binding.
    assert reachable(["/tmp", "/tmp/", "/usr/lib"], lambda d: True) == []


def test_an_app_endpoint_names_its_files_directory() -> None:
    from corral.server.services.assignments import app_directory
    from corral.spec.endpoint import EndpointSpec

    def of(app: str) -> list[str]:
        return app_directory(EndpointSpec.model_validate({"app": app}))

    assert of("/srv/emb/app.py:Embedder") == ["/srv/emb"]
    assert of("pkg.module:Embedder") == []  # importable: no directory named
