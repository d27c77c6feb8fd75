"""GPU health end to end: real agents with fake GPUs whose faults are injected through the
API (`corral node inject-fault`), judged by the control plane.

- Xid 79 under rank 0 of a DDP gang (gloo, across network-namespace hosts): the node is
  taken out, the attempt ends `gpu_xid` (not charged to max_restarts), and the gang runs
  again on the healthy hosts from its newest checkpoint and succeeds.
- On one node: a thermal slowdown leaves it schedulable (degraded); an Xid under a running
  job takes it out and moves the job; a reboot brings it back; the same Xid again after the
  reboot needs an operator, whose set-healthy is checked by the node's next report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.spec.job import JobSpec
from corral.spec.loader import load_job_spec
from corral.wire.api import JobView
from support.cluster import ADMIN_TOKEN, Cluster, wait_for
from support.multihost import HostCluster
from support.netns import make_hosts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp.yaml"
STEPS = 30
EVERY = 10
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _post(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = httpx.post(url + path, json=body, headers=ADMIN, timeout=30)
    assert r.status_code < 300, r.text
    data: dict[str, Any] = r.json()
    return data


def _node(url: str, name: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/nodes/{name}", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _wait_node(url: str, name: str, what: str, ok: Callable[[dict[str, Any]], bool]) -> Any:
    return wait_for(f"node {name}: {what}", lambda: d if ok(d := _node(url, name)) else None)


def _job(client: Any, name: str, what: str, ok: Callable[[JobView], bool], timeout: float = 60):
    return wait_for(
        f"job {name}: {what}",
        lambda: job if ok(job := client.get_job(name)) else None,
        timeout=timeout,
    )


@pytest.fixture
def hc(tmp_path: Path) -> Iterator[HostCluster]:
    hosts = make_hosts(3)
    cluster = HostCluster(hosts, tmp_path, lost_after=4.0, heartbeat=0.5)
    try:
        cluster.start()
        yield cluster
    finally:
        print(cluster.logs())
        cluster.close()


def _ddp(name: str) -> JobSpec:
    data = load_job_spec(EXAMPLE).model_dump(mode="json", exclude_none=True)
    data.update(
        name=name,
        command=f"exec python3 ddp.py --steps {STEPS} --checkpoint-every {EVERY} "
        "--step-time 0.2 --timeout 60",
    )
    data["resources"]["gpus"] = 1  # one fake GPU per host: the gang spans two hosts
    return JobSpec.model_validate(data)


def test_xid_79_under_a_ddp_rank_moves_the_gang_to_healthy_hosts(hc: HostCluster) -> None:
    with hc.client() as client:
        client.submit_job(_ddp("train"))
        first = _job(
            client,
            "train",
            "attempt 1 running",
            lambda j: (
                j.attempt == 1
                and all(r.state == "running" for r in j.replicas)
                and len(j.replicas) == 2
            ),
        )
        victim = next(r for r in first.replicas if r.rank == 0)
        host = hc.host(victim.node)
        wait_for(
            "rank 0 past the first checkpoint",
            lambda: (hc.progress(host, victim.id).get("step") or 0) > EVERY,
            timeout=60,
            interval=0.05,
        )
        _post(hc.url, f"/v1/nodes/{victim.node}/faults", {"kind": "xid", "gpu": 0, "xid": 79})

        sick = _wait_node(
            hc.url, victim.node, "taken out", lambda d: d["node"]["condition"] == "unhealthy"
        )
        assert sick["node"]["gpus"][0]["healthy"] is False
        assert "Xid 79" in (sick["node"]["health_summary"] or ""), sick["node"]
        assert sick["last_xid"]["0"]["code"] == 79

        second = _job(
            client,
            "train",
            "attempt 2 running",
            lambda j: (
                j.attempt == 2
                and all(r.state == "running" for r in j.replicas)
                and len(j.replicas) == 2
            ),
        )
        assert victim.node not in {r.node for r in second.replicas}
        assert second.attempts[0].end_cause == "gpu_xid", second.attempts[0]
        done = _job(client, "train", "to finish", lambda j: j.state in ("succeeded", "failed"))
    assert done.state == "succeeded", done.reason
    assert done.restarts == 0, "a GPU fault is not charged to max_restarts"
    assert done.attempts[1].start_step is not None and done.attempts[1].start_step >= EVERY
    events = _node(hc.url, victim.node)["events"]
    acted = [e for e in events if e["kind"] == "action" and "cordoned by corral" in e["text"]]
    assert acted and acted[0]["workloads"] == ["default/train"], events


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_server()
    try:
        c.agent("gpu-a", "--fake-gpus", "H100:4", "--health-interval", "0.5")
        c.wait_node_ready("gpu-a")
        yield c
    finally:
        c.close()


def test_degraded_stays_schedulable_xid_moves_work_reboot_returns_escalation_waits(
    node: Cluster,
) -> None:
    url = node.url
    _post(url, "/v1/nodes/gpu-a/faults", {"kind": "thermal", "gpu": 1})
    degraded = _wait_node(url, "gpu-a", "degraded", lambda d: d["node"]["health"] == "degraded")
    assert degraded["node"]["condition"] == "ready"
    with node.client() as client:
        client.submit_job(
            JobSpec.model_validate(
                {"name": "work", "command": "sleep 600", "resources": {"gpus": 4}}
            )
        )
        _job(client, "work", "running on all 4 GPUs", lambda j: j.state == "running")

        _post(url, "/v1/nodes/gpu-a/faults", {"kind": "xid", "gpu": 2, "xid": 79})
        _wait_node(url, "gpu-a", "taken out", lambda d: d["node"]["condition"] == "unhealthy")
        moved = _job(client, "work", "attempt 1 ended", lambda j: j.state == "pending")
        assert moved.attempts[0].end_cause == "gpu_xid", moved.attempts
        assert moved.restarts == 0

        # The job avoids the node it failed on (core.recovery's exclusion), and says so.
        # (the attempt's reason: the scheduler's pending reason replaces the job's own)
        assert "avoiding gpu-a" in (moved.attempts[0].reason or ""), moved.attempts
        client.cancel_job("work")

        # A reboot clears the Xid: the node comes back by itself and takes work again.
        _post(url, "/v1/nodes/gpu-a/faults", {"kind": "reboot"})
        _wait_node(url, "gpu-a", "back", lambda d: d["node"]["condition"] == "ready")
        client.submit_job(
            JobSpec.model_validate(
                {"name": "again", "command": "sleep 600", "resources": {"gpus": 4}}
            )
        )
        _job(client, "again", "running", lambda j: j.state == "running")

        # The same Xid after the reboot: inspect the hardware; a reboot does not clear it.
        _post(url, "/v1/nodes/gpu-a/faults", {"kind": "xid", "gpu": 2, "xid": 79})
        out = _wait_node(url, "gpu-a", "needs an operator", lambda d: d["needs_operator"])
        assert out["node"]["condition"] == "unhealthy" and out["repair"] == "inspect-hardware"
        _post(url, "/v1/nodes/gpu-a/faults", {"kind": "reboot"})
        rebooted_at = time.time()
        after = _wait_node(
            url, "gpu-a", "a report after the reboot", lambda d: (d["health_at"] or 0) > rebooted_at
        )
        assert after["node"]["condition"] == "unhealthy" and after["needs_operator"]

        # The operator repaired it: set-healthy runs the checks now, and they pass.
        done = _post(url, "/v1/nodes/gpu-a/set-healthy")
        assert done["node"]["condition"] == "ready", done
        assert "in service again" in (done["outcome"] or "")
        # "again" ended on the second Xid and avoids the node; a new job runs there.
        client.submit_job(
            JobSpec.model_validate(
                {"name": "third", "command": "sleep 600", "resources": {"gpus": 4}}
            )
        )
        _job(client, "third", "running", lambda j: j.state == "running")


def test_a_deleted_node_is_hung_up_on_and_its_agent_joins_again_as_a_new_node(
    node: Cluster,
) -> None:
    url = node.url
    before = _node(url, "gpu-a")["node"]["id"]
    r = httpx.delete(f"{url}/v1/nodes/gpu-a", headers=ADMIN, timeout=10)
    assert r.status_code == 204, r.text
    # Its agent's node token is revoked and its connection closed: with its join token it
    # registers again, as a node of its own.
    again = _wait_node(url, "gpu-a", "registered again", lambda d: d["node"]["id"] != before)
    assert again["node"]["condition"] == "ready" and again["events"] == []
