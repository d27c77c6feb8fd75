"""An uploaded working directory, end to end: packed and uploaded through the API, fetched by
a real confined agent (root) from a real control plane, copied into each replica's working
directory for the workspace's user; the node's cache serves the second replica, and a pod's
persistent working directory keeps what the user changed there."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.client import Client
from corral.client.artifacts import upload_tree
from corral.client.workdir import pack_workdir
from corral.spec.code import EnvironmentSpec
from corral.spec.job import JobSpec
from corral.spec.pod import PodSpec
from corral.wire.artifacts import blob_digest
from support.cluster import Cluster, wait_for
from support.pods import shared_volume_root
from support.wheels import Package, build_wheel

UID_BASE = 1_000_000  # the agent's default workload uid base


@dataclass
class Env:
    cluster: Cluster
    client: Client
    volumes: Path
    digest: str
    project: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("workdir-agent")
    project = root / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "model.py").write_text("NAME = 'tiny model'\n")
    (project / "train.py").write_text("from pkg.model import NAME\nprint('training', NAME)\n")
    (project / "run.sh").write_text("#!/bin/sh\necho script ran as $(id -u)\n")
    (project / "run.sh").chmod(0o755)
    (project / "notes.txt").write_text("original\n")
    (project / "requirements.txt").write_text("tinypkg==1.0\n")
    wheelhouse = root / "wheelhouse"
    build_wheel(Package("tinypkg", "1.0"), wheelhouse)
    with shared_volume_root() as volumes:
        cluster = Cluster(root)
        # The control plane serves these wheels (/v1/wheels/simple/): no index is reachable.
        cluster.env["CORRAL_WHEELHOUSE"] = str(wheelhouse)
        client = cluster.client()
        try:
            cluster.start_server()
            cluster.agent("node-a", "--volume-root", str(volumes), isolation="user")
            cluster.wait_node_ready("node-a")
            uploaded = upload_tree(client, pack_workdir(project))
            yield Env(cluster, client, volumes, "sha256:" + uploaded.digest, project)
        finally:
            client.close()
            cluster.close()


def agent_dir(env: Env) -> Path:
    return env.cluster.root / "agents" / "node-a"


def run_job(env: Env, name: str, command: str, **spec: Any) -> tuple[str, str]:
    """Run a job to its end; its state and its log."""
    env.client.submit_job(JobSpec(name=name, command=command, workdir=env.digest, **spec))
    job = env.client.wait_job(name, timeout=120)
    page = wait_for(
        f"job {name}'s whole log", lambda: (p := env.client.job_logs(name)).complete and p
    )
    return job.state, page.data


def test_a_job_runs_in_its_uploaded_tree_as_the_workspaces_user(env: Env) -> None:
    state, log = run_job(
        env,
        "first",
        "python3 train.py && ./run.sh && stat -c '%u %a %n' . pkg pkg/model.py run.sh"
        " && (echo more >> run.sh || echo cannot change run.sh)"
        " && cp run.sh r && mv r run.sh && echo replaced run.sh && stat -c '%u %n' run.sh",
    )
    assert state == "succeeded", log
    uid = wait_for(
        "the workspace's uid",
        lambda: next(iter({p.stat().st_uid for p in agent_dir(env).glob("homes/*")}), None),
    )
    assert uid > UID_BASE
    assert "training tiny model\n" in log
    assert f"script ran as {uid}\n" in log
    # The directories are the workspace's; the files are links to the node's one read-only
    # copy (root's), with the tree's modes: not changed in place, but replaced at will.
    assert f"{uid} 700 .\n{uid} 755 pkg\n0 644 pkg/model.py\n0 755 run.sh\n" in log
    assert "cannot change run.sh\n" in log and "replaced run.sh\n" in log
    assert f"{uid} run.sh\n" in log
    assert "corral: working directory sha256:" in log.splitlines()[0]


def test_a_second_replica_on_the_node_fetches_nothing(env: Env) -> None:
    run_job(env, "warm-up", "true")
    blob = agent_dir(env) / "artifacts" / "blobs"
    model = blob_digest(b"NAME = 'tiny model'\n")
    cached = blob / model[:2] / model
    before = cached.stat()
    fetched_lines = _fetch_lines(env)
    assert fetched_lines > 0  # the first job's fetch was logged
    state, log = run_job(env, "again", "cat notes.txt")
    assert state == "succeeded" and log.endswith("original\n"), log
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _fetch_lines(env) == fetched_lines  # no fetch logged for the second job
    assert stat.S_IMODE((agent_dir(env) / "artifacts").stat().st_mode) == 0o700


def _fetch_lines(env: Env) -> int:
    text = env.cluster.agents["node-a"].output()
    return sum(1 for line in text.splitlines() if "fetched working directory" in line)


def test_a_pods_working_directory_keeps_the_users_edit_on_restart(env: Env) -> None:
    command = "cat notes.txt >> seen.log; echo edited by the user > notes.txt; exec sleep 600"
    env.client.create_pod(PodSpec(name="dev", command=command, workdir=env.digest))
    wait_for("the pod to run", lambda: env.client.get_pod("dev").state == "running", 60)
    pods = env.volumes / "default" / ".pods"
    seen = wait_for("the pod's first log", lambda: _first(pods.glob("*/seen.log")))
    wait_for("the user's edit", lambda: "edited" in (seen.parent / "notes.txt").read_text())
    env.client.stop_pod("dev")
    wait_for("the pod to stop", lambda: env.client.get_pod("dev").state == "stopped", 60)
    env.client.start_pod("dev")
    wait_for("the pod to run again", lambda: env.client.get_pod("dev").state == "running", 60)
    wait_for("the second start", lambda: seen.read_text().count("\n") == 2)
    assert seen.read_text() == "original\nedited by the user\n"
    # The rest of the tree is there, the user's own.
    assert (seen.parent / "pkg" / "model.py").read_text() == "NAME = 'tiny model'\n"
    assert os.stat(seen.parent / "train.py").st_uid == os.stat(seen.parent).st_uid > UID_BASE
    env.client.stop_pod("dev")


def _first(paths: Iterator[Path]) -> Path | None:
    return next(iter(paths), None)


def test_an_environment_is_built_from_the_servers_wheels_then_found_in_the_cache(
    env: Env,
) -> None:
    environment = EnvironmentSpec(requirements="requirements.txt")
    show = "python -c 'import tinypkg, sys; print(tinypkg.VERSION, sys.prefix)'"
    state, log = run_job(env, "env-cold", show, environment=environment)
    assert state == "succeeded", log
    assert "corral: building environment" in log and "ready in" in log, log
    prefix = log.strip().splitlines()[-1].split()
    assert prefix[0] == "1.0" and "/.cache/corral/envs/" in prefix[1]
    state, log = run_job(env, "env-warm", show, environment=environment)
    assert state == "succeeded", log
    assert "from cache" in log and "building" not in log, log
    assert log.strip().splitlines()[-1].split() == prefix


def test_a_failed_build_is_the_jobs_error_not_a_retry(env: Env) -> None:
    environment = EnvironmentSpec(requirements=["no-such-package-anywhere==9.9"])
    state, log = run_job(env, "env-bad", "true", environment=environment)
    assert state == "failed", log
    job = env.client.get_job("env-bad")
    assert (job.attempt, job.exit_code) == (1, 2), job  # the user's error: not placed again
    reason = job.replicas[0].reason or ""
    assert reason.startswith("the environment could not be built:"), job.replicas
    assert "no-such-package-anywhere" in reason, reason
