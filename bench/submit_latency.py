"""Submit -> running and submit -> succeeded for a trivial job on a warm local node.

Starts its own control plane and local agent (`corral up --detach` in a temporary
CORRAL_HOME), submits `true` RUNS times one after another, and reads the server's own
timestamps (submitted_at, started_at, finished_at) for each job.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = 50
WARMUP = 3


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    from corral.client import Client
    from corral.spec import parse_job_spec

    corral = str(Path(sys.executable).with_name("corral"))
    home = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    env = {**os.environ, "CORRAL_HOME": str(home)}
    for key in ("CORRAL_SERVER", "CORRAL_TOKEN", "CORRAL_WORKSPACE"):
        env.pop(key, None)
    with socket.socket() as probe:  # any free port; `up` moves on if it is taken meanwhile
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        [corral, "up", "--detach", "--port", str(port)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        config = json.loads((home / "config.json").read_text())
        client = Client(config["server"], config["token"], config.get("workspace", "default"))
        running: list[float] = []
        finished: list[float] = []
        for i in range(WARMUP + RUNS):
            spec = parse_job_spec(
                {
                    "name": f"lat-{i}",
                    "command": "true",
                    "resources": {"cpus": 0.1, "memory": "16Mi"},
                }
            )
            client.submit_job(spec)
            job = client.wait_job(spec.name or "", timeout=30, poll_s=0.005)
            assert job.state == "succeeded", job
            if i < WARMUP:
                continue
            assert job.started_at is not None and job.finished_at is not None
            running.append(job.started_at - job.submitted_at)
            finished.append(job.finished_at - job.submitted_at)
            print(
                f"run {i - WARMUP + 1}/{RUNS}: running {running[-1] * 1000:.0f} ms, "
                f"succeeded {finished[-1] * 1000:.0f} ms",
                file=sys.stderr,
            )
        client.close()
    finally:
        subprocess.run([corral, "down"], env=env, stdout=subprocess.DEVNULL, check=False)
    print(
        json.dumps(
            {
                "bench": "submit_latency",
                "metric": "submit_to_running_p50_s",
                "value": round(statistics.median(running), 4),
                "unit": "s",
                "higher_is_better": False,
                "extra": {
                    "submit_to_running_p90_s": round(_quantile(running, 0.9), 4),
                    "submit_to_succeeded_p50_s": round(statistics.median(finished), 4),
                    "submit_to_succeeded_p90_s": round(_quantile(finished, 0.9), 4),
                },
                "conditions": {
                    "runs": RUNS,
                    "warmup": WARMUP,
                    "command": "true",
                    "nodes": 1,
                    "database": "sqlite",
                    "cpus": os.cpu_count(),
                    "timestamps": "server-side submitted_at/started_at/finished_at",
                },
            }
        )
    )


if __name__ == "__main__":
    main()
