"""`corral node add ssh://…` on a fresh network-namespace host -> the node `ready`.

A control plane on the namespaces' bridge, and per repetition a host that has never seen
corral: a real sshd (tests/support/sshd.py) in a namespace with no route but the bridge.
The figure is the wall time of the whole `corral node add` command (the CLI's own start
included) until it returns with the node ready; `extra.steps_median_s` says where it goes
(connect, check, token, upload, install, ready; `bundle` is the CLI getting the bundle
from the control plane, cached after the first time).

The first add on a server also builds the agent bundle from the server's environment (once
per environment, cached under <home>/bundles) and downloads it to the CLI's cache: reported
apart as `extra.cold_add_to_ready_s`. The headline is the median of the adds after it.

Run as root: `.venv/bin/python bench/node_add.py [--reps 3]`. Without root, network
namespaces or sshd it prints a JSON line with "skipped".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

BENCH = "node_add"
METRIC = "add_to_ready_s"
TARGET_S = 20.0


def skipped(why: str) -> dict[str, Any]:
    return {"bench": BENCH, "metric": METRIC, "skipped": why}


def add_once(cluster: Any, sshd: Any, root: Path, name: str) -> tuple[float, dict[str, Any]]:
    env = {**cluster.env, "CORRAL_HOME": str(root / "cli-home"), "NO_COLOR": "1"}
    argv = [
        sys.executable,
        "-m",
        "corral.cli.main",
        "node",
        "add",
        sshd.url,
        "--key",
        str(sshd.key),
        "--name",
        name,
        "--install-dir",
        str(root / "installs" / name),
        "--fake-gpus",
        "H100:8",
        # The bench's own file: never the user's ~/.ssh/known_hosts (hosts' keys are new
        # each run, at addresses that repeat).
        "--known-hosts",
        str(root / "known_hosts"),
        "--json",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"node add failed: {done.stdout}{done.stderr}")
    report = json.loads(done.stdout)["nodes"][0]
    return elapsed, report


def remove(cluster: Any, sshd: Any, root: Path, name: str) -> None:
    env = {**cluster.env, "CORRAL_HOME": str(root / "cli-home")}
    subprocess.run(
        [
            *(sys.executable, "-m", "corral.cli.main", "node", "remove", name),
            *("--key", str(sshd.key), "--known-hosts", str(root / "known_hosts")),
        ],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )


def run(reps: int) -> dict[str, Any]:
    from support.multihost import HostCluster
    from support.netns import make_hosts
    from support.sshd import NetnsSshd

    with tempfile.TemporaryDirectory(prefix="bench-node-add-") as tmp:
        root = Path(tmp)
        hosts = make_hosts(reps + 1, kind="netns")
        cluster = HostCluster(hosts, root / "cluster", fake_gpus=None)
        servers: list[NetnsSshd] = []
        try:
            cluster.start_server()
            times: list[float] = []
            steps: list[dict[str, float]] = []
            inside: list[float] = []
            for i, host in enumerate(hosts):
                sshd = NetnsSshd(host, root)
                servers.append(sshd)
                elapsed, report = add_once(cluster, sshd, root, f"bench-{i}")
                times.append(elapsed)
                steps.append(report["steps"])
                inside.append(report["total_s"] + report["steps"].get("bundle", 0.0))
                remove(cluster, sshd, root, f"bench-{i}")
        finally:
            for sshd in servers:
                sshd.close()
            cluster.close()
    warm = times[1:]
    names = sorted({k for s in steps[1:] for k in s})
    median = statistics.median(warm)
    return {
        "bench": BENCH,
        "metric": METRIC,
        "value": round(median, 2),
        "unit": "s",
        "higher_is_better": False,
        "target": TARGET_S,
        "extra": {
            "cold_add_to_ready_s": round(times[0], 2),
            "cold_steps_s": {k: round(v, 2) for k, v in steps[0].items()},
            "steps_median_s": {
                k: round(statistics.median(s.get(k, 0.0) for s in steps[1:]), 2) for k in names
            },
            "all_s": [round(t, 2) for t in warm],
            # The same adds timed inside the command (without the CLI's own start and exit).
            "in_command_median_s": round(statistics.median(inside[1:]), 2),
            "max_s": round(max(warm), 2),
        },
        "conditions": {
            "reps": reps,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "host": "network namespace, sshd, root login, supervised agent (no systemd)",
            "fake_gpus": "H100:8",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="warm adds after the cold one")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(json.dumps(skipped("needs root: network namespaces and an sshd")))
        return
    if not os.access("/usr/sbin/sshd", os.X_OK):
        print(json.dumps(skipped("/usr/sbin/sshd (openssh-server) is not installed")))
        return
    from support.netns import netns_available

    ok, why = netns_available()
    if not ok:
        print(json.dumps(skipped(f"network namespaces unavailable: {why}")))
        return
    print(json.dumps(run(args.reps)))


if __name__ == "__main__":
    main()
