"""The first page of `corral job ls` with 100,000 jobs stored.

Fills a fresh SQLite database through the store (bulk INSERTs, not 100,000 API calls:
every job ran one replica on one node, a few hundred are still running or pending), starts
a real server on it (`corral server`, uvicorn, as `corral up` runs it), then measures:

- the API's first page (GET /v1/workspaces/default/jobs, 50 newest), from a warm client;
- a page from the middle (a cursor 50,000 jobs deep): keyset pages cost the same anywhere;
- `corral job ls` end to end, a fresh CLI process each time (interpreter start included).

Headline: the CLI's median in seconds; the API's figures in `extra`.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

JOBS = 100_000
RUNNING = 200  # the newest jobs: still running (one replica each), then some pending
PENDING = 300
API_RUNS = 50
CLI_RUNS = 10
WARMUP = 3
TOKEN = "crl_bench_admin"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fill(url: str) -> float:
    """Store JOBS jobs (and their replicas) in the database at `url`; seconds it took."""
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
        workspace = ensure_workspace(session, "default", now)
        session.add(
            Node(
                id="node-0",
                name="node-0",
                token_hash="bench",
                condition="ready",
                hostname="node-0",
                cpus=64,
                memory_mb=512_000,
                disk_mb=1_000_000,
                gpus=[
                    {"index": i, "model": "H100", "memory_mb": 81920, "uuid": f"g{i}"}
                    for i in range(8)
                ],
                gpu_backend="fake",
                labels={},
                agent_version="bench",
                connected=True,
                registered_at=now,
                last_heartbeat_at=now,
            )
        )
        workspace_id = workspace.id
    jobs: list[dict[str, Any]] = []
    replicas: list[dict[str, Any]] = []
    for i in range(JOBS):
        name = f"train-{i:06d}"
        newest = JOBS - i  # 1 for the last submitted
        state = (
            "running"
            if newest <= RUNNING
            else "pending"
            if newest <= RUNNING + PENDING
            else "succeeded"
        )
        spec = parse_job_spec(
            {"name": name, "command": f"python train.py --run {i}", "resources": {"gpus": 1}}
        ).model_copy(update={"workspace": "default"})
        submitted = now - (JOBS - i) * 10.0
        started_at = None if state == "pending" else submitted + 1
        jobs.append(
            {
                "id": f"job-{i:06d}",
                "workspace_id": workspace_id,
                "name": name,
                "spec": spec.model_dump(mode="json"),
                "state": state,
                "priority": 0,
                "attempt": 0 if state == "pending" else 1,
                "restarts": 0,
                "preemptions": 0,
                "borrowed": False,
                "recovery": {},
                "reason": "waiting for a free H100" if state == "pending" else None,
                "submitted_at": submitted,
                "started_at": started_at,
                "finished_at": submitted + 5 if state == "succeeded" else None,
                "exit_code": 0 if state == "succeeded" else None,
                "version": 1,
            }
        )
        if state != "pending":
            replicas.append(
                {
                    "id": f"rep-{i:06d}",
                    "job_id": f"job-{i:06d}",
                    "attempt": 1,
                    "rank": 0,
                    "node_id": "node-0",
                    "gpus": [i % 8],
                    "cpus": 1.0,
                    "memory_mb": 1024,
                    "disk_mb": 0,
                    "state": state,
                    "desired": "run",
                    "exit_code": 0 if state == "succeeded" else None,
                    "created_at": submitted,
                    "started_at": started_at,
                    "finished_at": submitted + 5 if state == "succeeded" else None,
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


def start_server(home: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    corral = str(Path(sys.executable).with_name("corral"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "CORRAL_HOME": str(home),
        "CORRAL_DATABASE_URL": url,
        "CORRAL_BOOTSTRAP_ADMIN_TOKEN": TOKEN,
    }
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        [corral, "server", "--port", str(port), "--home", str(home)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(server: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{server}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server did not answer within {timeout:g} s")


def time_api(server: str, params: dict[str, Any]) -> list[float]:
    import httpx

    path = "/v1/workspaces/default/jobs"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    times: list[float] = []
    with httpx.Client(base_url=server, headers=headers) as http:
        for i in range(WARMUP + API_RUNS):
            started = time.perf_counter()
            response = http.get(path, params=params)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            body = response.json()
            assert len(body["jobs"]) == 50 and body["next_cursor"], body.get("error")
            if i >= WARMUP:
                times.append(elapsed)
    return times


def time_cli(server: str, home: Path) -> tuple[list[float], list[float]]:
    """Wall seconds of each `corral job ls`, and the CPU seconds its process used (on a
    loaded machine the wall time is mostly waiting for a core)."""
    corral = str(Path(sys.executable).with_name("corral"))
    # As on a user's machine, the warm-up writes corral's .pyc files: a shell that sets
    # PYTHONDONTWRITEBYTECODE (some sandboxes do) would otherwise compile every module of
    # corral from source on every run, which is not what a user waits for.
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "CORRAL_HOME": str(home / "cli"),
        "CORRAL_SERVER": server,
        "CORRAL_TOKEN": TOKEN,
        "CORRAL_WORKSPACE": "default",
        "COLUMNS": "200",
    }
    times: list[float] = []
    cpu: list[float] = []
    for i in range(1 + CLI_RUNS):  # one warm-up: the page cache, the .pyc files
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run([corral, "job", "ls"], env=env, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if result.returncode != 0:
            raise SystemExit(f"corral job ls failed: {result.stderr.decode()}")
        lines = result.stdout.decode().splitlines()
        assert "train-099999" in lines[2], lines[:3]  # the newest first
        if i >= 1:
            times.append(elapsed)
            cpu.append(used)
    return times, cpu


def main() -> None:
    from corral.server.services.pages import encode_cursor

    home = Path(tempfile.mkdtemp(prefix="corral-bench-list-"))
    url = f"sqlite:///{home / 'corral.db'}"
    fill_s = fill(url)
    print(f"stored {JOBS} jobs in {fill_s:.1f} s", file=sys.stderr)
    process, server = start_server(home, url)
    try:
        wait_healthy(server, process)
        first = time_api(server, {})
        # The middle of the list: a cursor just after job 50,000 (keyset, not OFFSET).
        middle = JOBS // 2
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.connect() as conn:
            submitted = conn.execute(
                text("SELECT submitted_at FROM jobs WHERE id = :id"), {"id": f"job-{middle:06d}"}
            ).scalar_one()
        engine.dispose()
        deep = time_api(server, {"cursor": encode_cursor((submitted, f"job-{middle:06d}"))})
        filtered = time_api(server, {"state": "succeeded"})
        cli, cli_cpu = time_cli(server, home)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    print(
        json.dumps(
            {
                "bench": "list_jobs",
                "metric": "cli_first_page_s",
                "value": round(statistics.median(cli), 4),
                "unit": "s",
                "higher_is_better": False,
                "extra": {
                    "api_first_page_ms": round(statistics.median(first) * 1000, 2),
                    "api_first_page_p99_ms": round(_quantile(first, 0.99) * 1000, 2),
                    "api_middle_page_ms": round(statistics.median(deep) * 1000, 2),
                    "api_state_filtered_page_ms": round(statistics.median(filtered) * 1000, 2),
                    "cli_first_page_p90_s": round(_quantile(cli, 0.9), 4),
                    "cli_cpu_s": round(statistics.median(cli_cpu), 4),
                    "load_average_1m": round(os.getloadavg()[0], 2),
                    "fill_s": round(fill_s, 1),
                },
                "conditions": {
                    "jobs": JOBS,
                    "running": RUNNING,
                    "pending": PENDING,
                    "page": 50,
                    "api_runs": API_RUNS,
                    "cli_runs": CLI_RUNS,
                    "warmup": WARMUP,
                    "database": "sqlite",
                    "server": "corral server (uvicorn), one process",
                    "cpus": os.cpu_count(),
                    "python": sys.version.split()[0],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
