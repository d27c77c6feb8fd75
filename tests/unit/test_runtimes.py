"""Container runtimes: detection against fake `docker`/`podman` clients first on PATH (one
that answers, one without an engine, one that hangs), and the `run` command line."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from corral.agent import inventory
from corral.agent.gpu.base import GpuReport
from corral.agent.runtimes import (
    client_environment,
    container_argv,
    describe,
    detect,
    stop_argv,
    write_env_file,
)
from corral.wire.agent import ContainerRuntime

DOCKER_INFO = {
    "ServerVersion": "27.3.1",
    "Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}},
    "CDISpecDirs": [],
    "ClientInfo": {"Version": "27.3.1"},
}
# What docker 28's CLI prints with no daemon behind it (this machine's, trimmed): exit 1.
DOCKER_NO_ENGINE = {"ServerVersion": "", "Runtimes": None, "ClientInfo": {"Version": "28.2.2"}}
PODMAN_INFO = {"host": {"ociRuntime": {"name": "crun"}}, "version": {"Version": "4.3.1"}}
NVIDIA_CDI_YAML = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: '0'\n"


def fake(bin_dir: Path, name: str, body: str) -> Path:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def answers(bin_dir: Path, name: str, info: Mapping[str, object], code: int = 0) -> None:
    """A client that prints `info` for exactly the arguments corral asks with."""
    fmt = "{{json .}}" if name == "docker" else "json"
    (bin_dir / f"{name}.json").write_text(json.dumps(info))
    fake(
        bin_dir,
        name,
        f'[ "$1" = info ] && [ "$2" = --format ] && [ "$3" = \'{fmt}\' ] || exit 64\n'
        f"/bin/cat {bin_dir / (name + '.json')}\nexit {code}\n",
    )


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Only the fakes on PATH: the host's own docker (a client without an engine here)
    must not answer for them."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))
    return directory


@pytest.fixture
def no_cdi(tmp_path: Path) -> list[str]:
    return [str(tmp_path / "no-cdi")]


def test_runtimes_that_answer_are_found_with_version_and_gpus(
    bin_dir: Path, tmp_path: Path
) -> None:
    answers(bin_dir, "docker", DOCKER_INFO)
    answers(bin_dir, "podman", PODMAN_INFO)
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    (cdi / "nvidia.yaml").write_text(NVIDIA_CDI_YAML)
    assert detect(cdi_dirs=[str(cdi)]) == [
        ContainerRuntime(name="docker", version="27.3.1", gpus=True),
        ContainerRuntime(name="podman", version="4.3.1", gpus=True),
    ]


def test_gpus_only_with_the_nvidia_runtime_or_cdi_devices(
    bin_dir: Path, tmp_path: Path, no_cdi: list[str]
) -> None:
    answers(bin_dir, "docker", {**DOCKER_INFO, "Runtimes": {"runc": {}}})
    answers(bin_dir, "podman", PODMAN_INFO)
    other = tmp_path / "cdi"
    other.mkdir()
    (other / "vendor.json").write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "acme.com/x"}))
    found = detect(cdi_dirs=[str(other)])
    assert [(r.name, r.gpus) for r in found] == [("docker", False), ("podman", False)]
    # Docker >= 25 lists CDI devices itself.
    devices = [{"Source": "cdi", "ID": "nvidia.com/gpu=0"}]
    answers(bin_dir, "docker", {**DOCKER_INFO, "Runtimes": {}, "DiscoveredDevices": devices})
    (other / "nvidia.json").write_text(json.dumps({"kind": "nvidia.com/gpu", "devices": []}))
    assert [(r.name, r.gpus) for r in detect(cdi_dirs=no_cdi)] == [
        ("docker", True),
        ("podman", False),
    ]
    assert [r.gpus for r in detect(cdi_dirs=[str(other)])] == [True, True]


def test_a_client_without_an_engine_is_not_a_runtime(bin_dir: Path, no_cdi: list[str]) -> None:
    answers(bin_dir, "docker", DOCKER_NO_ENGINE, code=1)
    fake(bin_dir, "podman", "echo 'Error: cannot connect to Podman' >&2\nexit 125\n")
    assert detect(cdi_dirs=no_cdi) == []
    # Exit 0 is not enough either: a server error or an empty server version is no engine.
    answers(bin_dir, "docker", {**DOCKER_INFO, "ServerErrors": ["cannot connect"]})
    answers(bin_dir, "podman", {"version": {}})
    assert detect(cdi_dirs=no_cdi) == []
    fake(bin_dir, "docker", "echo not json\n")
    assert detect(cdi_dirs=no_cdi) == []


def test_a_hung_client_is_killed_at_the_deadline_with_its_children(
    bin_dir: Path, tmp_path: Path, no_cdi: list[str]
) -> None:
    pids = tmp_path / "pids"
    # Its child holds stdout: killing only the client would leave communicate() waiting.
    fake(bin_dir, "podman", f"/bin/sleep 60 &\necho $! $$ > {pids}\nwait\n")
    answers(bin_dir, "docker", DOCKER_INFO)
    started = time.monotonic()
    found = detect(timeout_s=0.5, cdi_dirs=no_cdi)
    elapsed = time.monotonic() - started
    assert [r.name for r in found] == ["docker"]
    assert elapsed < 2.5, elapsed
    deadline = time.monotonic() + 5
    left = [int(p) for p in pids.read_text().split()]
    while time.monotonic() < deadline and any(_alive(p) for p in left):
        time.sleep(0.05)
    assert not any(_alive(p) for p in left)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_no_client_on_path_is_no_runtime(bin_dir: Path, no_cdi: list[str]) -> None:
    assert detect(cdi_dirs=no_cdi) == []


def test_inventory_carries_what_was_detected(bin_dir: Path, tmp_path: Path) -> None:
    answers(bin_dir, "podman", PODMAN_INFO)
    inv = inventory.collect(tmp_path, GpuReport("none"), {})
    assert [(r.name, r.version) for r in inv.runtimes] == [("podman", "4.3.1")]
    given = [ContainerRuntime(name="docker", version="1", gpus=False)]
    assert inventory.collect(tmp_path, GpuReport("none"), {}, runtimes=given).runtimes == given


# -- the run command ----------------------------------------------------------------------

SECRET = "s3cr3t-value-never-on-argv"


def test_docker_argv_confines_mounts_and_passes_gpus(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    argv = container_argv(
        ContainerRuntime(name="docker", version="27.3.1", gpus=True),
        "ghcr.io/org/train:1.2",
        ["python", "train.py", "--lr", "3e-4"],
        env={"HF_TOKEN": SECRET, "CUDA_VISIBLE_DEVICES": "2,5", "EMPTY": ""},
        env_file=env_file,
        cwd="/work",
        mounts=[("/var/lib/corral/replicas/r1/work", "/work"), ("/srv/vol/data", "/data")],
        gpus=[2, 5],
        uid=1_000_007,
        gid=1_000_007,
        name="corral-r1",
        shm_mb=4096,
    )
    assert argv == [
        "docker",
        "run",
        "--rm",
        "--name",
        "corral-r1",
        "--network",
        "host",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--workdir",
        "/work",
        "--user",
        "1000007:1000007",
        "--shm-size",
        "4096m",
        "--volume",
        "/var/lib/corral/replicas/r1/work:/work",
        "--volume",
        "/srv/vol/data:/data",
        "--env-file",
        str(env_file),
        "--gpus",
        '"device=2,5"',
        "--env",
        "CUDA_VISIBLE_DEVICES=0,1",
        "ghcr.io/org/train:1.2",
        "python",
        "train.py",
        "--lr",
        "3e-4",
    ]
    assert not any(SECRET in arg for arg in argv)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text() == (
        f"HF_TOKEN={SECRET}\nCUDA_VISIBLE_DEVICES=2,5\nEMPTY=\n"
    )  # the host indices are overridden by the --env after it


def test_podman_argv_passes_gpus_as_cdi_devices(tmp_path: Path) -> None:
    argv = container_argv(
        "podman",
        "localhost/debian:12",
        ["nvidia-smi"],
        env={"TOKEN": SECRET},
        env_file=tmp_path / "env",
        cwd="/work",
        mounts=[("/w", "/work")],
        gpus=[0, 3],
        uid=1000,
        gid=None,
        name="r2",
    )
    assert argv[:2] == ["podman", "run"]
    assert argv[argv.index("--user") : argv.index("--user") + 2] == ["--user", "1000:1000"]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "--device"]
    assert devices == ["nvidia.com/gpu=0", "nvidia.com/gpu=3"]
    assert "--gpus" not in argv
    assert argv[-2:] == ["localhost/debian:12", "nvidia-smi"]
    assert not any(SECRET in arg for arg in argv)


def test_no_gpus_hides_every_gpu(tmp_path: Path) -> None:
    argv = container_argv(
        "docker", "img:1", ["true"], env={}, cwd="/w", mounts=[], gpus=[], uid=5, gid=6, name="n"
    )
    assert "--env-file" not in argv  # nothing to pass, no file needed
    assert argv[argv.index("--env") + 1] == "NVIDIA_VISIBLE_DEVICES=void"
    assert "--gpus" not in argv and "--device" not in argv


def test_without_a_uid_it_runs_as_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    kw: dict[str, object] = {"env": {}, "cwd": "/w", "mounts": [], "gpus": [], "name": "n"}
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 100)
    rootless = container_argv("podman", "img", ["true"], uid=None, gid=None, **kw)  # type: ignore[arg-type]
    assert "--userns keep-id --user 1000:100" in " ".join(rootless)
    docker = container_argv("docker", "img", ["true"], uid=None, gid=None, **kw)  # type: ignore[arg-type]
    assert "--userns" not in docker and "--user 1000:100" in " ".join(docker)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"env": {"KEY": "a\nb"}}, "env KEY: a value with a line break"),
        ({"env": {"BAD-NAME": "x"}}, "'BAD-NAME' is not a variable name"),
        ({"mounts": [("/a:b", "/c")]}, "mount host path"),
        ({"mounts": [("/a", "relative")]}, "mount container path"),
        ({"cwd": "work"}, "cwd"),
        ({"image": "--privileged"}, "image"),
        ({"argv": []}, "argv"),
        ({"name": "-x"}, "name"),
        ({"gpus": [-1]}, "gpus"),
        ({"runtime": "lxc"}, "runtime"),
        ({"env_file": None}, "env_file"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    env_file = tmp_path / "env"
    kw: dict[str, object] = {
        "runtime": "docker",
        "image": "img:1",
        "argv": ["true"],
        "env": {"A": "1"},
        "env_file": env_file,
        "cwd": "/w",
        "mounts": [("/h", "/w")],
        "gpus": [0],
        "uid": 1,
        "gid": 1,
        "name": "corral-r1",
        **change,
    }
    runtime, image, argv = kw.pop("runtime"), kw.pop("image"), kw.pop("argv")
    with pytest.raises(ValueError, match=message):
        container_argv(runtime, image, argv, **kw)  # type: ignore[arg-type]
    assert not env_file.exists()


def test_the_env_file_is_never_written_through_a_link_or_over_a_file(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    for path in (link, target):
        with pytest.raises(FileExistsError):
            write_env_file(path, {"A": "1"})
    assert target.read_text() == "keep\n"


def test_stop_argv_names_the_container() -> None:
    assert stop_argv("podman", "corral-r1", grace_s=5) == [
        "podman",
        "stop",
        "--time",
        "5",
        "corral-r1",
    ]


def test_node_get_shows_the_runtimes_or_none() -> None:
    from types import SimpleNamespace

    from corral.cli.nodeview import runtime_text

    both = SimpleNamespace(
        runtimes=[
            ContainerRuntime(name="podman", version="4.3.1", gpus=True),
            {"name": "docker", "version": "27.3.1", "gpus": False},
        ]
    )
    assert runtime_text(both) == "podman 4.3.1 (GPUs), docker 27.3.1"  # type: ignore[arg-type]
    assert runtime_text(both, short=True) == "podman+gpus, docker"  # type: ignore[arg-type]
    for bare in (SimpleNamespace(), SimpleNamespace(runtimes=None), SimpleNamespace(runtimes=[])):
        assert runtime_text(bare) == "none"  # type: ignore[arg-type]
        assert runtime_text(bare, short=True) == "-"  # type: ignore[arg-type]


def test_the_agents_log_line_says_what_was_found() -> None:
    found = [ContainerRuntime(name="podman", version="4.3.1", gpus=True)]
    assert describe(found) == "container runtimes: podman 4.3.1 (GPUs)"
    assert "jobs with an image are not placed on this node" in describe([])


def test_the_client_gets_what_finds_its_engine_and_nothing_else() -> None:
    agent = {
        "DOCKER_HOST": "unix:///run/docker.sock",
        "CONTAINERS_CONF": "/etc/corral/containers.conf",
        "HF_TOKEN": "operator-secret",
        "LD_PRELOAD": "/x.so",
        "PATH": "/usr/bin",
    }
    assert client_environment(agent) == {
        "DOCKER_HOST": "unix:///run/docker.sock",
        "CONTAINERS_CONF": "/etc/corral/containers.conf",
    }
