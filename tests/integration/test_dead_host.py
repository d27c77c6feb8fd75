"""A closed agent connection: an agent restarting versus a dead host, as real processes.

The silence bound is set long (30 s) here, so a node lost within seconds can only have
been found by the closed-connection rule: its connection closed and its lifeline
(agent/lifeline.py) stayed silent. An agent killed alone has a lifeline that speaks for
the host: its node is not lost, and its replica runs on, once, under the restarted agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.spec.job import JobSpec
from support.cluster import Cluster, wait_for

CLOSED_BOUND = 2.5  # the server's default node_closed_lost_after_s


@pytest.fixture
def slow_silence(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, lost_after=30.0)
    c.start_server()
    try:
        yield c
    finally:
        c.close()


def _node(c: Cluster, name: str):  # type: ignore[no-untyped-def]
    with c.client() as client:
        return next(n for n in client.list_nodes() if n.name == name)


def _running(c: Cluster, name: str):  # type: ignore[no-untyped-def]
    with c.client() as client:
        return wait_for(
            f"job {name} running",
            lambda: (
                j if (j := client.get_job(name)).state == "running" and j.replicas[0].pid else None
            ),
            timeout=30,
        )


def test_an_agent_restart_keeps_its_replica_and_a_dead_host_is_lost_fast(
    slow_silence: Cluster,
) -> None:
    c = slow_silence
    agent = c.agent("a", "--fake-gpus", "H100:1")
    c.wait_node_ready("a")
    with c.client() as client:
        client.submit_job(
            JobSpec.model_validate({"name": "w", "command": "sleep 600", "resources": {"gpus": 1}})
        )
    first = _running(c, "w")
    pid = first.replicas[0].pid
    lifeline = json.loads((c.root / "agents" / "a" / "lifeline.json").read_text())["pid"]
    assert psutil.pid_exists(lifeline)

    # The agent alone dies: through twice the closed bound the node is not lost.
    agent.kill9()
    watched_until = time.monotonic() + 2 * CLOSED_BOUND
    while time.monotonic() < watched_until:
        assert _node(c, "a").condition != "lost", "an agent restart looked like a dead host"
        time.sleep(0.1)
    c.agent("a", "--fake-gpus", "H100:1")
    c.wait_node_ready("a")
    again = _running(c, "w")
    assert (again.attempt, again.replicas[0].pid) == (1, pid), "the same replica, once"
    assert psutil.pid_exists(pid)

    # The host dies: agent, lifeline and the replica's shim and workload at once.
    agent = c.agents["a"]
    killed = time.monotonic()
    for proc in (agent.popen.pid if agent.popen else None, lifeline, pid):
        if proc is not None:
            with contextlib.suppress(OSError):
                os.kill(proc, signal.SIGKILL)
    for shim in (c.root / "agents" / "a" / "replicas").glob("*/shim.json"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(json.loads(shim.read_text())["shim_pid"], signal.SIGKILL)
    wait_for("node a lost", lambda: _node(c, "a").condition == "lost", timeout=20)
    assert time.monotonic() - killed < 30.0 - 5, "found by the closed rule, not by silence"
    with c.client() as client:
        job = wait_for(
            "attempt 1 ended node_lost",
            lambda: j if (j := client.get_job("w")).attempts and j.attempts[0].end_cause else None,
        )
    assert job.attempts[0].end_cause == "node_lost", job.attempts
