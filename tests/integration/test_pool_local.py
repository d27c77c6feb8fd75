"""A pool on the `local` provider, end to end: a real server, real agents started by the
pool controller. A job waiting for GPUs makes the pool grow by one node (an agent with fake
GPUs of the pool's shape, joined with its one-use join token and the pool's labels), the
job runs there and its cost is the pool's price, and once the node has been idle past the
pool's grace it is released: its agent stopped, its directory gone, the node deleted.
The server takes local pools only when started to (CORRAL_ALLOW_LOCAL_POOLS, as `corral
up` does); their agents get a minimal environment; stopping one kills only its own
processes, whatever pids its workload wrote into the files it can write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.providers.catalog import load_catalog
from corral.providers.local import MARKER_ENV, LocalProvider, agent_environment
from corral.spec import parse_job_spec
from corral.spec.pool import NodePoolSpec
from support.cluster import Cluster, wait_for

SERVER_SECRET = "AWS_SECRET_ACCESS_KEY"


@pytest.fixture
def allow_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server started as `corral up` starts it, with a credential in its environment
    that no agent it starts may inherit. Asked for before `cluster`: it reads os.environ."""
    monkeypatch.setenv("CORRAL_ALLOW_LOCAL_POOLS", "1")
    monkeypatch.setenv(SERVER_SECRET, "the-servers-own")


@pytest.fixture
def local_nodes(cluster: Cluster) -> Iterator[Path]:
    root = cluster.root / "home" / "local-nodes"
    try:
        yield root
    finally:
        # Every agent the pool started goes with the test, whatever happened.
        provider = LocalProvider(root, load_catalog())
        provider.terminate([i.provider_id for i in provider.list()])


def _agents(root: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "agent" in cmdline and any(str(root) in part for part in cmdline):
            found.append(proc)
    return found


def test_a_waiting_job_grows_a_local_pool_and_the_idle_node_is_released(
    allow_local: None, cluster: Cluster, local_nodes: Path
) -> None:
    with cluster.client() as client:
        spec = NodePoolSpec(
            name="fake",
            provider="local",
            type="fake-h100x1",
            max=2,
            price=3.0,
            idle_after=3,
            labels={"team": "vision"},
        )
        client.create_pool(spec)
        job = parse_job_spec(
            {
                "name": "train",
                "command": "sleep 1",
                "resources": {"gpus": "H100:1", "cpus": 0.1, "memory": "64Mi"},
            }
        )
        client.submit_job(job)
        # Four GPUs in one node: no node of this pool (one GPU each) can ever hold it.
        too_big = parse_job_spec(
            {"name": "too-big", "command": "true", "resources": {"gpus": "H100:4", "cpus": 0.1}}
        )
        client.submit_job(too_big)

        node = wait_for(
            "the pool to grow and its node to be ready",
            lambda: next(
                (n for n in client.list_nodes() if n.condition == "ready" and n.connected),
                None,
            ),
            timeout=60,
        )
        assert node.name.startswith("fake-")
        assert {k: node.labels.get(k) for k in ("pool", "provider", "instance-type", "team")} == {
            "pool": "fake",
            "provider": "local",
            "instance-type": "fake-h100x1",
            "team": "vision",
        }
        (agent,) = _agents(local_nodes)
        environ = agent.environ()
        assert SERVER_SECRET not in environ and "CORRAL_ALLOW_LOCAL_POOLS" not in environ
        assert environ[MARKER_ENV] == str(local_nodes / node.name)
        (instance,) = client.get_pool("fake").instances
        assert instance.node == node.name and instance.price_per_hour == 3.0
        token = local_nodes / node.name / "join-token"
        assert token.stat().st_mode & 0o777 == 0o600

        done = wait_for(
            "job train to succeed",
            lambda: (j := client.get_job("train")).state in ("succeeded", "failed") and j,
            timeout=60,
        )
        assert done.state == "succeeded", done.reason
        assert done.replicas[0].node == node.name
        assert done.cost is not None and done.cost.usd is not None
        # One GPU for the replica's run (about a second), at the pool's $3 per node-hour.
        assert 0 < done.cost.gpu_hours < 0.01
        assert done.cost.usd == pytest.approx(3.0 * done.cost.gpu_hours, abs=1e-3)

        # What the autoscaler says about it is where its user looks: the job's reason.
        wait_for(
            "the unmet reason on job too-big",
            lambda: "no pool can hold 1 x (gpus=H100:4" in (client.get_job("too-big").reason or ""),
            timeout=30,
        )
        client.cancel_job("too-big")

        wait_for(
            "the idle node to be released and deleted",
            lambda: all(n.name != node.name for n in client.list_nodes()),
            timeout=60,
        )
        view = client.get_pool("fake")
        assert [i.state for i in view.instances] == ["terminated"]
        assert "idle for" in (view.instances[0].reason or "")
        kinds = [e.kind for e in view.events]
        assert {"grow", "launch", "release", "terminate"} <= set(kinds)
    wait_for("the agent to have stopped", lambda: not _agents(local_nodes), timeout=20)
    assert not (local_nodes / node.name).exists()


def _sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env=env,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )


def _gone(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def test_stopping_a_local_node_kills_its_own_processes_and_no_pid_it_wrote(
    tmp_path: Path,
) -> None:
    """A workload there runs as the server's user: it can write any pid into the agent's
    state files. Only processes carrying the node's marker (inherited from its agent) go."""
    root = tmp_path / "local-nodes"
    home = root / "n1"
    (home / "state" / "replicas" / "r1").mkdir(parents=True)
    ours = _sleeper(agent_environment(os.environ, home))  # a replica's leftover process
    stranger = _sleeper()  # anyone else's: the server itself, another node's agent
    other_node = _sleeper(agent_environment(os.environ, root / "n2"))
    try:
        lies = {"pid": stranger.pid, "pgid": stranger.pid, "workload_pgid": other_node.pid}
        (home / "state" / "replicas" / "r1" / "shim.json").write_text(json.dumps(lies))
        (home / "state" / "lifeline.json").write_text(json.dumps({"pid": stranger.pid}))
        (home / "instance.json").write_text(json.dumps({"pid": other_node.pid, "pool": "p"}))
        LocalProvider(root, load_catalog()).terminate(["local:n1"])
        wait_for("the node's own process to be killed", lambda: _gone(ours), timeout=10)
        assert not _gone(stranger) and not _gone(other_node)
        assert not home.exists()
    finally:
        for proc in (ours, stranger, other_node):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_corral_down_stops_the_local_pools_nodes_with_it(tmp_path: Path) -> None:
    """`corral up`'s local pools' agents are its children in all but name: `corral down`
    (and Ctrl-C) stop them too, rather than leave them dialling a server that is gone."""
    from corral.cli.localrun import stop_pool_nodes

    home = tmp_path / "local-nodes" / "demo-1"
    home.mkdir(parents=True)
    agent = _sleeper(agent_environment(os.environ, home))
    try:
        (home / "instance.json").write_text(json.dumps({"pid": agent.pid, "pool": "demo"}))
        assert stop_pool_nodes(tmp_path) == 1
        wait_for("the pool node's agent to stop", lambda: _gone(agent), timeout=10)
        assert not home.exists()
        assert stop_pool_nodes(tmp_path) == 0
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()
