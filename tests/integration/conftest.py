"""Integration fixtures: a real control plane and real agents, as processes on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cluster import Cluster, report_cluster_logs


@pytest.fixture(autouse=True)
def no_stray_lifelines(tmp_path: Path) -> Iterator[None]:
    """An agent's lifeline outlives it by design (agent/lifeline.py): the ones this test's
    agents started go with the test, not minutes later."""
    yield
    for found in tmp_path.glob("**/lifeline.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            os.kill(int(json.loads(found.read_text())["pid"]), signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_server()
    try:
        yield c
    except BaseException:
        raise
    finally:
        c.close()


@pytest.fixture
def one_node(cluster: Cluster) -> Cluster:
    cluster.agent("node-a", "--fake-gpus", "H100:4")
    cluster.wait_node_ready("node-a")
    return cluster


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    report_cluster_logs(item, call)
