"""Inference endpoints end to end: control plane, agent (with probes), gateway, real replicas.

Replicas are the mock OpenAI server (tests/support/mock_openai.py), started by the agent
on $PORT like any model server; requests go through the gateway at /ep/NAME/.
"""

from __future__ import annotations

import concurrent.futures
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.cluster import ADMIN_TOKEN, Cluster, wait_for

MOCK = Path(__file__).resolve().parents[1] / "support" / "mock_openai.py"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EP = "/v1/workspaces/default/endpoints"


class Fleet:
    def __init__(self, cluster: Cluster, gateway: str) -> None:
        self.cluster = cluster
        self.gateway = gateway
        self.api = httpx.Client(base_url=cluster.url, headers=ADMIN, timeout=30)
        self.http = httpx.Client(base_url=self.gateway, timeout=60)

    def deploy(self, spec: dict[str, Any]) -> dict[str, Any]:
        r = self.api.post(EP, json=spec)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def routed(self, name: str) -> None:
        """Wait until the gateway has the endpoint in its route table."""
        wait_for(
            f"the gateway to route {name}",
            lambda: any(
                e["name"] == name
                for e in httpx.get(f"{self.gateway}/_corral/load", headers=ADMIN).json()[
                    "endpoints"
                ]
            ),
        )

    def get(self, name: str) -> dict[str, Any]:
        r = self.api.get(f"{EP}/{name}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def chat(self, name: str, **headers: str) -> httpx.Response:
        return self.http.post(
            f"/ep/{name}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        )

    def stream(self, name: str) -> tuple[int, str]:
        with self.http.stream(
            "POST",
            f"/ep/{name}/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        ) as r:
            return r.status_code, "".join(r.iter_text())


def mock_command(*args: str) -> str:
    return f"{sys.executable} {MOCK} --port $PORT --host 0.0.0.0 " + " ".join(args)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    cluster = Cluster(tmp_path)
    gateway = cluster.gateway("gw-test")
    url = cluster.env["CORRAL_GATEWAY_PUBLIC_URL"]
    cluster.start_server()
    gateway.start()
    try:
        cluster.agent("node-a")
        cluster.wait_node_ready("node-a")
        wait_for(
            "the gateway to answer",
            lambda: httpx.get(f"{url}/_corral/load", headers=ADMIN).status_code == 200,
        )
        yield Fleet(cluster, url)
    finally:
        gateway.stop()
        cluster.close()


def test_scale_from_zero_holds_requests_and_answers_them_all(fleet: Fleet) -> None:
    view = fleet.deploy(
        {
            "name": "chat",
            "command": mock_command("--startup-delay", "1.0", "--delay", "0.05"),
            "min_replicas": 0,
            "max_replicas": 2,
            "scale_to_zero_after": "10m",
            "auth": "public",
            "resources": {"cpus": 0.1, "memory": "64Mi"},
        }
    )
    assert view["state"] == "scaled-to-zero" and view["url"].endswith("/ep/chat/")
    fleet.routed("chat")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: fleet.chat("chat"), range(8)))
    assert [r.status_code for r in answers] == [200] * 8, answers[0].text
    assert all(r.json()["choices"] for r in answers)
    shown = fleet.get("chat")
    assert shown["ready_replicas"] >= 1 and shown["replicas"][0]["state"] == "ready"


def test_load_step_scales_out_and_a_rolling_update_drops_no_stream(fleet: Fleet) -> None:
    fleet.deploy(
        {
            "name": "llm",
            "command": mock_command("--chunk-interval", "0.05", "--chunks", "10"),
            "min_replicas": 1,
            "max_replicas": 3,
            "target_in_flight": 2,
            "drain_timeout": 30,
            "auth": "public",
            "resources": {"cpus": 0.1, "memory": "64Mi"},
        }
    )
    wait_for("llm to be ready", lambda: fleet.get("llm")["state"] == "ready", timeout=30)

    stop = time.monotonic() + 6.0

    def client_loop(_: int) -> list[tuple[int, str]]:
        results = []
        while time.monotonic() < stop:
            results.append(fleet.stream("llm"))
        return results

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client_loop, i) for i in range(8)]
        wait_for(
            "llm to scale out under load",
            lambda: fleet.get("llm")["desired_replicas"] == 3,
            timeout=15,
        )
        done = [r for f in futures for r in f.result()]
    assert done and all(code == 200 and "[DONE]" in body for code, body in done)
    wait_for("3 ready replicas", lambda: fleet.get("llm")["ready_replicas"] == 3, timeout=30)

    # Roll out a new revision under constant streaming load.
    spec = fleet.get("llm")["spec"]
    spec["env"] = {"REVISION": "2"}
    r = fleet.api.put(f"{EP}/llm", json=spec)
    assert r.status_code == 200 and r.json()["revision"] == 2
    stop = time.monotonic() + 600
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client_loop, i) for i in range(6)]
        wait_for(
            "every replica to run revision 2",
            lambda: (
                (v := fleet.get("llm"))["replicas"]
                and all(rep["revision"] == 2 and rep["state"] == "ready" for rep in v["replicas"])
            ),
            timeout=60,
        )
        stop = time.monotonic()
        during = [r for f in futures for r in f.result()]
    assert during, "no request ran during the update"
    # Idle old replicas are stopped once the gateways show them empty, not at drain_timeout.
    wait_for(
        "the old revision's replicas to be gone",
        lambda: all(rep["revision"] == 2 for rep in fleet.get("llm")["replicas"]),
        timeout=15,
    )
    bad = [(code, body[-80:]) for code, body in during if code != 200 or "[DONE]" not in body]
    assert bad == [], f"{len(bad)} of {len(during)} streams failed or were cut"


def test_delete_drains_and_removes_and_workspace_auth_needs_a_token(fleet: Fleet) -> None:
    fleet.deploy(
        {
            "name": "private",
            "command": mock_command(),
            "resources": {"cpus": 0.1, "memory": "64Mi"},
        }
    )
    wait_for("private to be ready", lambda: fleet.get("private")["state"] == "ready", timeout=30)
    assert fleet.chat("private").status_code == 401
    assert fleet.chat("private", authorization=f"Bearer {ADMIN_TOKEN}").status_code == 200
    r = fleet.api.delete(f"{EP}/private")
    assert r.status_code == 202 and r.json()["state"] == "deleting"
    wait_for(
        "private to be gone",
        lambda: fleet.api.get(f"{EP}/private").status_code == 404,
        timeout=30,
    )
    # Its replica jobs were stopped first, then forgotten with it.
    assert fleet.api.get("/v1/workspaces/default/jobs").json()["jobs"] == []


def test_the_embeddings_example_served_by_corral_serve_answers_384_dimensions(
    fleet: Fleet,
) -> None:
    app = Path(__file__).resolve().parents[2] / "examples" / "embeddings" / "app.py"
    fleet.deploy(
        {
            "name": "embeddings",
            "app": f"{app}:Embedder",
            "auth": "public",
            "resources": {"cpus": 0.5, "memory": "512Mi"},
        }
    )
    wait_for("embeddings to be ready", lambda: fleet.get("embeddings")["state"] == "ready", 60)
    r = fleet.http.post("/ep/embeddings/v1/embeddings", json={"input": ["hello", "corral"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [len(d["embedding"]) for d in data] == [384, 384]


def test_a_replica_that_dies_is_replaced(fleet: Fleet) -> None:
    import os
    import signal

    fleet.deploy(
        {
            "name": "flaky",
            "command": "exec " + mock_command(),
            "auth": "public",
            "resources": {"cpus": 0.1, "memory": "64Mi"},
        }
    )
    wait_for("flaky to be ready", lambda: fleet.get("flaky")["state"] == "ready", timeout=30)
    (first,) = fleet.get("flaky")["replicas"]
    job = fleet.api.get(f"/v1/workspaces/default/jobs/{first['job']}").json()
    os.kill(job["replicas"][0]["pid"], signal.SIGKILL)
    replaced = wait_for(
        "a new ready replica",
        lambda: (
            (v := fleet.get("flaky"))["ready_replicas"] == 1
            and v["replicas"][0]["job"] != first["job"]
            and v
        ),
        timeout=30,
    )
    assert replaced["state"] == "ready"
    fleet.routed("flaky")
    assert fleet.chat("flaky").status_code == 200


def test_the_empty_ls_hint_becomes_ready(fleet: Fleet) -> None:
    # What `corral endpoint ls` suggests when there is nothing: it must serve as it is.
    fleet.deploy(
        {
            "name": "hello",
            "command": "python3 -m http.server $PORT",
            "readiness": {"path": "/"},
            "auth": "public",
            "resources": {"cpus": 0.1, "memory": "64Mi"},
        }
    )
    wait_for("hello to be ready", lambda: fleet.get("hello")["state"] == "ready", timeout=30)
    fleet.routed("hello")
    assert fleet.http.get("/ep/hello/").status_code == 200


def test_an_update_on_a_full_node_rolls_by_replacement(fleet: Fleet) -> None:
    # One replica takes every CPU of the node: no room for a surge (the README's example
    # on a small machine). The update must still finish, and say how it goes meanwhile.
    (node,) = fleet.api.get("/v1/nodes").json()["nodes"]
    spec = {
        "name": "full",
        "command": mock_command(),
        "auth": "public",
        "drain_timeout": 5,
        "resources": {"cpus": node["cpus"], "memory": "64Mi"},
    }
    fleet.deploy(spec)
    wait_for("full to be ready", lambda: fleet.get("full")["state"] == "ready", timeout=30)
    r = fleet.api.put(f"{EP}/full", json={**spec, "env": {"REVISION": "2"}})
    assert r.status_code == 200 and r.json()["revision"] == 2
    reasons: list[str] = []

    def rolled() -> bool:
        view = fleet.get("full")
        reasons.append(view["reason"] or "")
        return view["state"] == "ready" and all(rep["revision"] == 2 for rep in view["replicas"])

    wait_for("revision 2 to serve alone", rolled, timeout=60)
    assert any("by replacement: no node has room for a surge" in r for r in reasons), reasons
    fleet.routed("full")
    assert fleet.chat("full").status_code == 200


def test_a_replica_on_a_gpu_that_fails_is_replaced_under_load_without_a_failed_request(
    fleet: Fleet,
) -> None:
    for name in ("gpu-1", "gpu-2"):
        fleet.cluster.agent(name, "--fake-gpus", "H100:1", "--health-interval", "0.5")
        fleet.cluster.wait_node_ready(name)
    fleet.deploy(
        {
            "name": "gpu",
            "command": mock_command("--chunk-interval", "0.05", "--chunks", "6"),
            "auth": "public",
            "drain_timeout": 30,
            "resources": {"gpus": 1, "cpus": 0.1, "memory": "64Mi"},
        }
    )
    wait_for("gpu to be ready", lambda: fleet.get("gpu")["state"] == "ready", timeout=30)
    fleet.routed("gpu")
    (first,) = fleet.get("gpu")["replicas"]
    job = fleet.api.get(f"/v1/workspaces/default/jobs/{first['job']}").json()
    sick = job["replicas"][0]["node"]
    stop = time.monotonic() + 600

    def client_loop(_: int) -> list[tuple[int, str]]:
        results = []
        while time.monotonic() < stop:
            results.append(fleet.stream("gpu"))
        return results

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client_loop, i) for i in range(4)]
        wait_for("requests to flow", lambda: fleet.get("gpu")["replicas"], timeout=10)
        r = fleet.api.post(f"/v1/nodes/{sick}/faults", json={"kind": "xid", "gpu": 0, "xid": 79})
        assert r.status_code == 202, r.text
        replaced = wait_for(
            "a replacement serving on the healthy node, the sick one gone",
            lambda: (
                (v := fleet.get("gpu"))["replicas"]
                and all(rep["job"] != first["job"] for rep in v["replicas"])
                and v["ready_replicas"] == 1
                and v
            ),
            timeout=60,
        )
        stop = time.monotonic()
        during = [r for f in futures for r in f.result()]
    (now,) = replaced["replicas"]
    job = fleet.api.get(f"/v1/workspaces/default/jobs/{now['job']}").json()
    assert job["replicas"][0]["node"] != sick
    assert during, "no request ran while the replica was replaced"
    bad = [(code, body[-80:]) for code, body in during if code != 200 or "[DONE]" not in body]
    assert bad == [], f"{len(bad)} of {len(during)} requests failed while replacing"
