"""A spot interruption, end to end: a real control plane and real agents; the one thing
faked is EC2's instance metadata service (a loopback HTTP server speaking IMDSv2), the
boundary nothing here can reach.

```
 fake IMDS ──(spot/instance-action: 404, then a notice)──► agent spot-1 (--interruption-notices aws)
                                                             │ POST /v1/agent/interruption
 server: node spot-1 cordoned "spot interruption: the instance is reclaimed at T";
         the training job's attempt ends `preempted`, it is queued again and runs on spare
```
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from corral.agent.interruption import InterruptionWatcher, parse_notice
from corral.spec import parse_job_spec
from support.aws import FakeImds
from support.cluster import ADMIN_TOKEN, Cluster, wait_for

RECLAIM = datetime(2026, 12, 3, 17, 2, 0, tzinfo=UTC)


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    with FakeImds() as fake:
        yield fake


def node(cluster: Cluster, name: str):  # type: ignore[no-untyped-def]
    with cluster.client() as client:
        return next(n for n in client.list_nodes() if n.name == name)


def job(cluster: Cluster, name: str):  # type: ignore[no-untyped-def]
    with cluster.client() as client:
        return client.get_job(name)


def test_a_notice_drains_the_node_and_the_job_moves(
    cluster: Cluster, imds: FakeImds, tmp_path: Path
) -> None:
    cluster.agent(
        "spot-1",
        "--fake-gpus",
        "H100:1",
        "--interruption-notices",
        "aws",
        "--imds-url",
        imds.url,
        "--interruption-poll",
        "0.2",
    )
    cluster.wait_node_ready("spot-1")
    spec = {
        "name": "train",
        "command": "echo attempt $CORRAL_ATTEMPT; exec sleep 600",
        "resources": {"gpus": "H100:1", "cpus": 0.1, "memory": "64Mi"},
        "preemptible": True,
    }
    with cluster.client() as client:
        client.submit_job(parse_job_spec(spec))
    first = wait_for(
        "the job running on spot-1",
        lambda: (j := job(cluster, "train")).state == "running" and j,
    )
    assert [r.node for r in first.replicas] == ["spot-1"]
    pid = wait_for("its pid", lambda: job(cluster, "train").replicas[0].pid)
    # Polling, no notice yet: the node stays as it is.
    wait_for("the watcher's reads", lambda: imds.reads >= 3)
    assert node(cluster, "spot-1").condition == "ready"
    assert imds.token_puts == 1 and imds.unauthorized == 0  # IMDSv2, one session token

    cluster.agent("spare", "--fake-gpus", "H100:1")
    cluster.wait_node_ready("spare")
    imds.notice = {"action": "terminate", "time": "2026-12-03T17:02:00Z"}

    drained = wait_for(
        "spot-1 cordoned for the interruption",
        lambda: (n := node(cluster, "spot-1")).condition == "cordoned" and n,
    )
    assert drained.cordon_reason == (
        "spot interruption: the instance is reclaimed at 2026-12-03T17:02:00Z"
    )
    moved = wait_for(
        "the job's second attempt running on spare",
        lambda: (j := job(cluster, "train")).attempt == 2 and j.state == "running" and j,
        timeout=30,
    )
    assert [r.node for r in moved.replicas] == ["spare"]
    ended = moved.attempts[0]
    assert ended.end_cause == "preempted"
    assert ended.reason is not None and "spot interruption" in ended.reason
    assert moved.restarts == 0  # not charged to max_restarts
    # The replica on the reclaimed node was stopped.
    wait_for("the first attempt's process to be gone", lambda: not psutil.pid_exists(pid))

    # A notice repeated (an agent restarted after telling) changes nothing.
    token = json.loads((tmp_path / "agents" / "spot-1" / "node.json").read_text())["node_token"]
    again = httpx.post(
        f"{cluster.url}/v1/agent/interruption",
        json={"action": "terminate", "at": RECLAIM.timestamp()},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert again.status_code == 200 and "already told" in again.json()["outcome"]
    assert job(cluster, "train").attempt == 2
    refused = httpx.post(
        f"{cluster.url}/v1/agent/interruption",
        json={"action": "terminate", "at": RECLAIM.timestamp()},
        headers={"Authorization": "Bearer not-a-node"},
    )
    assert refused.status_code == 401
    for bad in (1e30, -1, "soon"):
        wrong = httpx.post(
            f"{cluster.url}/v1/agent/interruption",
            json={"action": "terminate", "at": bad},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert wrong.status_code == 422, wrong.text
        assert [f["path"] for f in wrong.json()["error"]["fields"]] == ["at"]
    assert "spot interruption notice" in cluster.agents["spot-1"].output()


def test_the_instance_action_document() -> None:
    notice = parse_notice(b'{"action": "stop", "time": "2026-12-03T17:02:00Z"}')
    assert notice is not None
    assert (notice.action, notice.at) == ("stop", RECLAIM.timestamp())
    assert parse_notice(b"not json") is None
    assert parse_notice(b'{"action": "terminate"}') is None
    assert parse_notice(b'{"action": "terminate", "time": "2026-12-03T17:02:00"}') is None


def test_a_bad_setting_is_one_line(cluster: Cluster) -> None:
    proc = cluster.agent("bad", "--interruption-notices", "gcp")
    assert proc.popen is not None and proc.popen.wait(30) == 2
    assert "interruption notices: 'gcp': expected aws" in proc.output()
    assert "Traceback" not in proc.output()


def test_the_watcher_renews_its_token_and_retries_the_server(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, through httpx.MockTransport: the metadata service unreachable at first
    (said once), a session token that expires (401: a new one), then a notice; the server
    not yet answering (503) and the node not yet registered: told once it can be."""
    seen: list[str] = []
    state = {"tokens": 0, "reads": 0, "posts": 0}
    node_tokens = iter([None, "nt-1", "nt-1"])

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.host == "imds":
            if request.method == "PUT":
                state["tokens"] += 1
                return httpx.Response(200, text=f"t{state['tokens']}")
            state["reads"] += 1
            if state["reads"] <= 2:
                raise httpx.ConnectError("no route to host")
            if request.headers.get("X-aws-ec2-metadata-token") == "t1" and state["reads"] > 3:
                return httpx.Response(401)
            if state["reads"] < 5:
                return httpx.Response(404)
            return httpx.Response(200, json={"action": "terminate", "time": "2026-12-03T17:02:00Z"})
        state["posts"] += 1
        assert request.headers["Authorization"] == "Bearer nt-1"
        assert json.loads(request.content) == {
            "provider": "aws",
            "action": "terminate",
            "at": RECLAIM.timestamp(),
        }
        if state["posts"] == 1:
            return httpx.Response(503)
        return httpx.Response(200, json={"outcome": "node 'n' drained: 0 job(s)"})

    watcher = InterruptionWatcher(
        "http://server",
        lambda: next(node_tokens),
        base_url="http://imds",
        poll_s=0.01,
        transport=httpx.MockTransport(handle),
    )
    monkeypatch.setattr("corral.agent.interruption.TELL_FIRST_S", 0.01)
    with caplog.at_level("WARNING", "corral.agent.interruption"):
        notice = asyncio.run(asyncio.wait_for(watcher.run(), 10))
    assert notice.at == RECLAIM.timestamp() and watcher.told == notice
    assert state["tokens"] == 2  # renewed once, after the 401
    assert state["posts"] == 2  # the 503, then the one the server took
    assert sum("cannot read spot notices" in r.message for r in caplog.records) == 1
    assert any("not registered yet" in r.message for r in caplog.records)
    assert seen[-1] == "POST /v1/agent/interruption"


MOCK = Path(__file__).resolve().parents[1] / "support" / "mock_openai.py"
EP = "/v1/workspaces/default/endpoints"


def test_a_notice_moves_an_endpoints_replica(cluster: Cluster, imds: FakeImds) -> None:
    """The endpoint's replica on the reclaimed node is replaced: its successor on another
    node is ready first, then the old one goes."""
    cluster.agent(
        "spot-1",
        "--interruption-notices",
        "aws",
        "--imds-url",
        imds.url,
        "--interruption-poll",
        "0.2",
    )
    cluster.wait_node_ready("spot-1")
    api = httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    )
    command = f"{sys.executable} {MOCK} --port $PORT --host 0.0.0.0"
    made = api.post(
        EP,
        json={
            "name": "chat",
            "command": command,
            "min_replicas": 1,
            "drain_timeout": 2,
            "resources": {"cpus": 0.1, "memory": "64Mi"},
        },
    )
    assert made.status_code == 201, made.text

    def replicas() -> list[tuple[str | None, str]]:
        shown = api.get(f"{EP}/chat").json()
        return [(r["node"], r["state"]) for r in shown["replicas"]]

    wait_for("the replica ready on spot-1", lambda: replicas() == [("spot-1", "ready")], 60)
    cluster.agent("spare")
    cluster.wait_node_ready("spare")
    imds.notice = {"action": "terminate", "time": "2026-12-03T17:02:00Z"}
    wait_for("spot-1 cordoned", lambda: node(cluster, "spot-1").condition == "cordoned")
    wait_for("the replica moved to spare", lambda: replicas() == [("spare", "ready")], 60)
