"""The web console's two heaviest pages at fleet scale, through a real server.

Fills a fresh SQLite database through the store (bulk INSERTs): 1,000 nodes x 8 H100s over
2 providers, 4 regions, 8 zones and 50 racks, each with a health report of its GPUs'
signals; 100,000 jobs over 4 workspaces, of which ~6,000 run one replica each (three GPUs
in four allocated), 500 wait, the rest are done. Starts `corral server` on it, logs in
through the console's login form as a browser would, then measures:

- GET /ui/fleet (every node and GPU cell, unfiltered): the headline, `fleet_page_ms`;
- GET /ui/workloads, first page and a page 50,000 jobs deep (`workloads_page_ms`);
- beside them, the API's reads of the same data (GET /v1/nodes, all 1,000, in pages of the
  largest size; GET /v1/jobs, the first page), the baseline the console's cost is read against.

Server time is the handler's own (the `Server-Timing: total` each page sends); wall time is
the client's (loopback). Medians of RUNS after WARMUP.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from list_jobs import start_server, wait_healthy

NODES = 1_000
GPUS = 8
JOBS = 100_000
WORKSPACES = ("default", "team-a", "team-b", "team-c")
PENDING = 500
RUNS = 20
WARMUP = 3
TOKEN = "crl_bench_admin"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _signals(name: str, n: int, now: float) -> dict[str, Any]:
    """A node's last health report as the server stores it (services/health.py)."""
    from corral.wire.health import GpuSignals, HealthReport

    report = HealthReport(
        sent_at=now,
        backend="fake",
        full=True,
        gpus=[
            GpuSignals(
                index=i,
                uuid=f"{name}-{i}",
                model="H100",
                memory_total_mb=81920,
                memory_used_mb=(n * 7 + i * 13) % 81920,
                utilization_pct=float((n * 31 + i * 17) % 101),
                temperature_c=40.0 + (n + i) % 40,
                power_w=100.0 + (n * i) % 600,
            )
            for i in range(GPUS)
        ],
    )
    return report.model_dump(mode="json", exclude={"gpus": {"__all__": {"xids"}}})


def _node_rows(now: float) -> list[dict[str, Any]]:
    rows = []
    for n in range(NODES):
        name = f"gpu-{n:04d}"
        provider = "aws" if n < NODES // 2 else "lab"
        region = f"{provider}-r{(n // 250) % 2}"
        zone = f"{region}-z{(n // 125) % 2}"
        rack = f"rack-{n // 20:02d}"
        cordoned = n % 97 == 5
        lost = n % 211 == 7
        rows.append(
            {
                "id": f"node-{n:04d}",
                "name": name,
                "token_hash": f"bench-{n}",
                "condition": "lost" if lost else "cordoned" if cordoned else "ready",
                "cordon_reason": "bench: cordoned by an operator" if cordoned else None,
                "hostname": name,
                "cpus": 192,
                "memory_mb": 2_000_000,
                "disk_mb": 8_000_000,
                "gpus": [
                    {"index": i, "model": "H100", "memory_mb": 81920, "uuid": f"{name}-{i}"}
                    for i in range(GPUS)
                ],
                "gpu_backend": "fake",
                "labels": {"provider": provider, "region": region, "zone": zone, "rack": rack},
                "agent_version": "bench",
                "connected": not lost,
                "registered_at": now - 86_400,
                "last_heartbeat_at": now - (3_600 if lost else 1),
                "health_signals": _signals(name, n, now),
                "health_at": now - 5,
                "version": 1,
            }
        )
    return rows


def fill(url: str) -> float:
    """Store the fleet and the jobs in the database at `url`; seconds it took."""
    from sqlalchemy import insert

    from corral.server.services.identity import ensure_workspace
    from corral.server.store.db import Store
    from corral.server.store.migrate import upgrade
    from corral.server.store.tables import Job, Node, Replica
    from corral.spec import parse_job_spec

    started = time.perf_counter()
    store = Store(url)
    upgrade(store.engine)
    now = time.time()
    with store.transaction() as session:
        ws_ids = [ensure_workspace(session, w, now).id for w in WORKSPACES]
    nodes = _node_rows(now)
    with store.transaction() as session:
        session.execute(insert(Node), nodes)
    ready = [n["id"] for n in nodes if n["condition"] == "ready"]
    slots = [(node, gpu) for node in ready for gpu in range(GPUS)]
    running = len(slots) * 3 // 4
    jobs: list[dict[str, Any]] = []
    replicas: list[dict[str, Any]] = []
    spec_cache: dict[str, dict[str, Any]] = {}
    for i in range(JOBS):
        newest = JOBS - i  # 1 for the last submitted
        ws = i % len(WORKSPACES)
        state = (
            "running"
            if newest <= running
            else "pending"
            if newest <= running + PENDING
            else ("failed" if i % 17 == 0 else "succeeded")
        )
        name = f"train-{i:06d}"
        key = WORKSPACES[ws]
        if key not in spec_cache:
            spec = parse_job_spec(
                {"name": "x", "command": "python train.py", "resources": {"gpus": "H100:1"}}
            ).model_copy(update={"workspace": key})
            spec_cache[key] = spec.model_dump(mode="json")
        submitted = now - newest * 5.0
        started_at = None if state == "pending" else submitted + 1
        finished = state in ("succeeded", "failed")
        jobs.append(
            {
                "id": f"job-{i:06d}",
                "workspace_id": ws_ids[ws],
                "name": name,
                "spec": {**spec_cache[key], "name": name},
                "state": state,
                "priority": 0,
                "attempt": 0 if state == "pending" else 1,
                "restarts": 0,
                "preemptions": 0,
                "borrowed": False,
                "recovery": {},
                "reason": (
                    "needs 1×H100; every ready node is full"
                    if state == "pending"
                    else "exit code 1"
                    if state == "failed"
                    else None
                ),
                "submitted_at": submitted,
                "started_at": started_at,
                "finished_at": submitted + 60 if finished else None,
                "exit_code": (1 if state == "failed" else 0) if finished else None,
                "version": 1,
            }
        )
        if state == "running":
            node, gpu = slots[newest - 1]
            replicas.append(
                {
                    "id": f"rep-{i:06d}",
                    "job_id": f"job-{i:06d}",
                    "attempt": 1,
                    "rank": 0,
                    "node_id": node,
                    "gpus": [gpu],
                    "cpus": 1.0,
                    "memory_mb": 1024,
                    "disk_mb": 0,
                    "state": "running",
                    "desired": "run",
                    "created_at": submitted,
                    "started_at": started_at,
                    "received_bytes": 0,
                    "version": 1,
                }
            )
    with store.transaction() as session:
        for start in range(0, len(jobs), 10_000):
            session.execute(insert(Job), jobs[start : start + 10_000])
        for start in range(0, len(replicas), 10_000):
            session.execute(insert(Replica), replicas[start : start + 10_000])
    store.close()
    return time.perf_counter() - started


def log_in(server: str) -> Any:
    import httpx

    http = httpx.Client(base_url=server, timeout=30)
    answer = http.post("/ui/login", data={"token": TOKEN, "next": "/ui/fleet"})
    assert answer.status_code == 303, answer.text
    assert "corral_console" in http.cookies, "the login set no session cookie"
    return http


def _server_ms(response: Any) -> float:
    timing = response.headers.get("server-timing", "")
    for part in timing.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "total":
            return float(dur)
    raise SystemExit(f"{response.request.url} sent no Server-Timing total: {timing!r}")


def time_page(http: Any, path: str, params: dict[str, Any], must: str) -> tuple[list[float], ...]:
    server: list[float] = []
    wall: list[float] = []
    size = 0
    for i in range(WARMUP + RUNS):
        started = time.perf_counter()
        response = http.get(path, params=params)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        assert must in response.text, f"{path}: {must!r} not on the page"
        size = response.num_bytes_downloaded  # on the wire (gzipped for a browser)
        if i >= WARMUP:
            server.append(_server_ms(response))
            wall.append(elapsed * 1000)
    return server, wall, [float(size)]


def time_api_nodes(server: str) -> list[float]:
    import httpx

    times = []
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for i in range(WARMUP + RUNS):
            started = time.perf_counter()
            seen, cursor = 0, None
            while True:
                params: dict[str, Any] = {"limit": 500}
                if cursor:
                    params["cursor"] = cursor
                body = http.get("/v1/nodes", params=params).raise_for_status().json()
                seen += len(body["nodes"])
                cursor = body.get("next_cursor")
                if not cursor:
                    break
            assert seen == NODES, seen
            if i >= WARMUP:
                times.append((time.perf_counter() - started) * 1000)
    return times


def _deep_cursor(url: str) -> str:
    """The workloads page's cursor just after job 50,000 (keyset, not OFFSET)."""
    from sqlalchemy import create_engine, text

    from corral.server.services.pages import encode_cursor

    engine = create_engine(url)
    with engine.connect() as conn:
        submitted = conn.execute(
            text("SELECT submitted_at FROM jobs WHERE id = 'job-050000'")
        ).scalar_one()
    engine.dispose()
    return encode_cursor((submitted, "job-050000"))


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="corral-bench-console-"))
    url = f"sqlite:///{home / 'corral.db'}"
    fill_s = fill(url)
    print(f"stored {NODES} nodes and {JOBS} jobs in {fill_s:.1f} s", file=sys.stderr)
    os.environ["CORRAL_NODE_LOST_AFTER"] = str(10 * 86_400)  # the bench's nodes never dial in
    process, server = start_server(home, url)
    try:
        wait_healthy(server, process)
        http = log_in(server)
        fleet, fleet_wall, fleet_size = time_page(http, "/ui/fleet", {}, "gpu-0999")
        first, first_wall, _ = time_page(http, "/ui/workloads", {"kind": "job"}, "train-099999")
        deep, _, _ = time_page(
            http, "/ui/workloads", {"kind": "job", "cursor": _deep_cursor(url)}, "train-04999"
        )
        api = time_api_nodes(server)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    fleet_ms = statistics.median(fleet)
    api_ms = statistics.median(api)
    print(
        json.dumps(
            {
                "bench": "console",
                "metric": "fleet_page_ms",
                "value": round(fleet_ms, 1),
                "unit": "ms",
                "higher_is_better": False,
                "baseline": "api_nodes_all_pages",
                "baseline_value": round(api_ms, 1),
                "ratio": round(fleet_ms / api_ms, 2),
                "extra": {
                    "workloads_page_ms": round(statistics.median(first), 1),
                    "workloads_deep_page_ms": round(statistics.median(deep), 1),
                    "fleet_page_p99_ms": round(_quantile(fleet, 0.99), 1),
                    "fleet_page_wall_ms": round(statistics.median(fleet_wall), 1),
                    "workloads_page_wall_ms": round(statistics.median(first_wall), 1),
                    "fleet_page_wire_kb": round(fleet_size[0] / 1024, 1),
                    "target_ms": 300,
                    "load_average_1m": round(os.getloadavg()[0], 2),
                    "fill_s": round(fill_s, 1),
                },
                "conditions": {
                    "nodes": NODES,
                    "gpus_per_node": GPUS,
                    "jobs": JOBS,
                    "workspaces": len(WORKSPACES),
                    "runs": RUNS,
                    "warmup": WARMUP,
                    "database": "sqlite",
                    "server": "corral server (uvicorn), one process",
                    "server_time": "Server-Timing total (the handler's own)",
                    "cpus": os.cpu_count(),
                    "python": sys.version.split()[0],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
