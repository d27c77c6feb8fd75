"""examples/project on two network-namespace hosts whose only copy of the code, and whose
only source of packages, is the control plane.

The CLI packs the project (honouring .corralignore), uploads it and submits; the local copy
is deleted before any replica starts. Each host's agent fetches the tree from the server,
builds the environment from requirements.txt with uv from the server's wheelhouse (the
hosts have no route anywhere but the server), runs `setup` once, then `python train.py`,
which imports the project's own package and tabulate. A second run of the same project
uploads nothing and finds the environment in each node's cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cluster import wait_for
from support.multihost import HostCluster
from support.netns import Host, make_hosts

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "project"
WHEELHOUSE = ROOT / ".wheelhouse"


@pytest.fixture
def hc(tmp_path: Path) -> Iterator[HostCluster]:
    assert list(WHEELHOUSE.glob("tabulate-*.whl")), (
        f"{WHEELHOUSE} has no tabulate wheel: run scripts/test-deps.sh (make test does)"
    )
    hosts = make_hosts(2)

    # Unconfined agents (the harness's): workloads run with their host's HOME, so each
    # host has an environment cache of its own (as two machines would), not the machine's.
    def home(host: Host) -> dict[str, str]:
        path = tmp_path / "homes" / host.name
        path.mkdir(parents=True, exist_ok=True)
        return {"HOME": str(path)}

    cluster = HostCluster(
        hosts,
        tmp_path / "cluster",
        fake_gpus="H100:1",
        env={"CORRAL_WHEELHOUSE": str(WHEELHOUSE)},
        host_env=home,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        print(cluster.logs())
        cluster.close()


def corral(hc: HostCluster, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral.cli.main", *args],
        cwd=cwd,
        env={**hc.env, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def submit(hc: HostCluster, tmp_path: Path, name: str) -> tuple[str, Path]:
    """A fresh copy of the project, one GPU per replica (one per host: the two replicas
    land on two hosts), submitted with `corral job run -d`; the copy is then removed."""
    project = tmp_path / name
    shutil.copytree(PROJECT, project)
    (project / "outputs").mkdir()
    (project / "outputs" / "model.ckpt").write_bytes(b"x" * 4096)  # in .corralignore
    spec = (project / "job.yaml").read_text()
    (project / "job.yaml").write_text(spec.replace("resources:\n", "resources:\n  gpus: 1\n"))
    done = corral(hc, project, "job", "run", "-d", "--name", name, "job.yaml")
    assert done.returncode == 0, done.stderr + done.stdout
    shutil.rmtree(project)
    return done.stderr, project


def finished(hc: HostCluster, name: str):  # type: ignore[no-untyped-def]
    def probe():  # type: ignore[no-untyped-def]
        with hc.client() as client:
            job = client.get_job(name)
        return job if job.state in ("succeeded", "failed", "cancelled") else None

    return wait_for(f"job {name} to end", probe, timeout=180)


def test_the_example_project_runs_on_two_hosts_from_what_corral_carried(
    hc: HostCluster, tmp_path: Path
) -> None:
    said, _ = submit(hc, tmp_path, "wordstats")
    assert re.search(r"workdir: .* sha256:[0-9a-f]{8}", said), said
    job = finished(hc, "wordstats")
    assert job.state == "succeeded", (job.reason, [r.reason for r in job.replicas])
    nodes = {r.node for r in job.replicas}
    assert nodes == {h.name for h in hc.hosts}, nodes

    for replica in job.replicas:
        host = hc.host(replica.node)
        out = hc.replica_output(host, replica.id)
        # The environment was built on this node, from the server's wheelhouse, before setup
        # and the command, and its log comes first.
        assert "building environment" in out, out
        assert (
            out.index("building environment")
            < out.index("setup runs once")
            < out.index(f"replica {replica.rank} on")
        ), out
        # train.py imported the project's package, which imported tabulate.
        assert re.search(r"word\s+count\n-+\s+-+\n", out), out
        work = hc.state_dir(host) / "replicas" / replica.id / "work"
        assert (work / "wordstats" / "counting.py").is_file()
        assert (work / "data" / "corpus.txt").is_file()
        assert not (work / "outputs").exists(), "a .corralignore'd directory travelled"

    # Again, from another copy of the same tree: nothing to upload, environments cached.
    said, _ = submit(hc, tmp_path, "wordstats-again")
    assert re.search(r"uploaded 0 B\b", said), said
    job = finished(hc, "wordstats-again")
    assert job.state == "succeeded", (job.reason, [r.reason for r in job.replicas])
    for replica in job.replicas:
        out = hc.replica_output(hc.host(replica.node), replica.id)
        assert "from cache" in out and "building environment" not in out, out
        assert "setup runs once" not in out, "setup ran twice on one node for one environment"
    assert not os.path.exists(tmp_path / "wordstats")
