"""A job with an `image` end to end through a fake container runtime: a real server, a node
whose agent finds no runtime (the job waits, and says why) and a confined node whose agent
finds a `podman` that answers `info` (the job is placed there and runs through it).

The fake `podman` is a small documented stand-in (no registry, no images here): for `run`
it checks every flag against the ones corral may pass, records its argv and what it was
handed, and runs the command itself with the environment from the --env-file and --env
flags only (not the host's), in the --workdir. What that proves: the command line corral
builds (no env value on it), the environment reaching the workload, the stop by name
after the client ends. What it does not: a real runtime's isolation (see the report on a
rootless podman in this sandbox).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

from corral.spec import parse_job_spec
from support.cluster import Cluster, wait_for

IMAGE = "localhost/corral-test:1"
SECRET = "tok-6f1c2b-never-on-argv"
SMALL = {"cpus": 0.1, "memory": "64Mi"}
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

FAKE_PODMAN = """
import json, os, stat, sys

RECORD = {record!r}
VALUED = {{"--name", "--network", "--cap-drop", "--security-opt", "--workdir", "--user",
          "--shm-size", "--volume", "--env-file", "--env", "--gpus", "--device", "--userns"}}
args = sys.argv[1:]


def note(entry):
    with open(RECORD, "a") as f:
        f.write(json.dumps(entry) + "\\n")


if args[:1] == ["info"]:
    if args != ["info", "--format", "json"]:
        sys.exit(64)
    info = {{"host": {{"ociRuntime": {{"name": "crun"}}}}, "version": {{"Version": "4.3.1"}}}}
    print(json.dumps(info))
    sys.exit(0)
if args[:1] == ["stop"]:
    note({{"stop": args}})
    sys.exit(0)
if args[:1] != ["run"]:
    sys.exit(64)
flags, i = [], 1
while i < len(args) and args[i].startswith("-"):
    if args[i] == "--rm":
        flags.append(["--rm", None])
        i += 1
        continue
    if args[i] not in VALUED or i + 1 >= len(args):
        print("fake podman: unexpected flag " + args[i], file=sys.stderr)
        sys.exit(125)
    flags.append([args[i], args[i + 1]])
    i += 2
image, command = args[i], args[i + 1:]
env = {{"PATH": {path!r}}}
workdir, file_mode = "/", None
for flag, value in flags:
    if flag == "--env-file":
        file_mode = stat.S_IMODE(os.stat(value).st_mode)
        with open(value) as f:
            env.update(line.rstrip("\\n").split("=", 1) for line in f if "=" in line)
    elif flag == "--env":
        name, _, val = value.partition("=")
        env[name] = val
    elif flag == "--workdir":
        workdir = value
note({{"argv": sys.argv, "flags": flags, "image": image, "command": command,
       "env_file_mode": file_mode}})
os.chdir(workdir)
os.execvpe(command[0], command, env)
"""

NO_ENGINE = "#!/bin/sh\necho 'Cannot connect to the daemon' >&2\nexit 1\n"


def runtime_dir(root: Path, record: Path) -> Path:
    """A directory with a fake `podman` that answers, put first on an agent's PATH."""
    directory = root / "with-runtime"
    directory.mkdir()
    fake = directory / "podman"
    body = FAKE_PODMAN.format(record=str(record), path=IMAGE_PATH)
    fake.write_text(f"#!{sys.executable} -I\n{body}")
    fake.chmod(0o755)
    # A docker client without an engine beside it, as on this machine: not a runtime.
    (directory / "docker").write_text(NO_ENGINE)
    (directory / "docker").chmod(0o755)
    return directory


def no_runtime_dir(root: Path) -> Path:
    """Clients that fail like a CLI with no engine behind it, whatever the host has."""
    directory = root / "without-runtime"
    directory.mkdir()
    for name in ("docker", "podman"):
        (directory / name).write_text(NO_ENGINE)
        (directory / name).chmod(0o755)
    return directory


def start_agent(cluster: Cluster, name: str, path_first: Path, isolation: str) -> None:
    saved = cluster.env
    cluster.env = {**saved, "PATH": f"{path_first}:{saved.get('PATH', '')}"}
    try:
        cluster.agent(name, isolation=isolation)
    finally:
        cluster.env = saved
    cluster.wait_node_ready(name)


def records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_image_job_waits_for_a_runtime_node_then_runs_through_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    record = tmp_path / "podman-calls.jsonl"
    start_agent(cluster, "plain", no_runtime_dir(tmp_path), isolation="none")
    with cluster.client() as client:
        assert client.get_node("plain").node.runtimes == []
        client.submit_job(
            parse_job_spec(
                {
                    "name": "boxed",
                    "image": IMAGE,
                    "command": 'echo "token=$HF_TOKEN"; echo "user=$(id -u)"; pwd',
                    "env": {"HF_TOKEN": SECRET},
                    "resources": SMALL,
                }
            )
        )
        pending = wait_for(
            "the image job to be pending with its reason",
            lambda: (
                (j := client.get_job("boxed")).state == "pending"
                and (j.reason or "").startswith("image ")
                and j
            ),
        )
        assert pending.reason == (
            f"image {IMAGE} needs a node with a container runtime (docker or podman); the one "
            "ready node has none (see `corral node get`)"
        )
        assert records(record) == []

        start_agent(cluster, "boxes", runtime_dir(tmp_path, record), isolation="user")
        runtimes = client.get_node("boxes").node.runtimes
        assert [(r.name, r.version, r.gpus) for r in runtimes] == [("podman", "4.3.1", False)]
        done = wait_for(
            "the image job to end",
            lambda: (j := client.get_job("boxed")).state in ("succeeded", "failed") and j,
            timeout=30,
        )
        log = client.job_logs("boxed").data
    assert done.state == "succeeded", (done.reason, log)
    assert [r.node for r in done.replicas] == ["boxes"]
    assert f"token={SECRET}\n" in log

    calls = records(record)
    runs = [c for c in calls if "argv" in c]
    assert len(runs) == 1, calls
    run = runs[0]
    argv = run["argv"]
    assert isinstance(argv, list)
    assert not any(SECRET in str(arg) for arg in argv)
    assert run["image"] == IMAGE
    assert run["env_file_mode"] == 0o600
    flags = {flag: value for flag, value in run["flags"]}  # type: ignore[union-attr]
    assert flags["--network"] == "host"
    assert flags["--cap-drop"] == "ALL"
    assert flags["--security-opt"] == "no-new-privileges"
    assert flags["--env"] == "NVIDIA_VISIBLE_DEVICES=void"  # asked for no GPUs
    assert "--rm" in flags
    # A confined node: the workspace's own uid, never root.
    user = re.fullmatch(r"(\d+):(\d+)", str(flags["--user"]))
    assert user is not None and int(user[1]) > 0 and int(user[2]) > 0, flags["--user"]
    # The working directory is mounted at the path it runs in, and is where it ran.
    volumes = [value for flag, value in run["flags"] if flag == "--volume"]  # type: ignore[union-attr]
    assert f"{flags['--workdir']}:{flags['--workdir']}" in volumes
    assert f"\n{flags['--workdir']}\n" in f"\n{log}"
    # The env file is the agent's: root's and no one else's.
    env_file = Path(str(flags["--env-file"]))
    assert env_file.stat().st_uid == os.getuid()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # Once the client ended, the container was stopped by its name (gone either way).
    stops = [c["stop"] for c in calls if "stop" in c]
    assert stops and all(s[-1] == flags["--name"] for s in stops), stops  # type: ignore[index]
