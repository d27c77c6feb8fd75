#!/usr/bin/env bash
# corral's GPU reads against a real NVIDIA GPU and driver (a lent GPU machine): what the fake
# backend everywhere else stands in for.
#
# Prints, as JSON:
#   1. the inventory the agent registers (corral.agent.inventory.detect_gpus, NVML);
#   2. one full health report from corral.agent.health.HealthMonitor (one check: every NVML
#      signal per GPU, and the node's disks, memory, D state, boot id);
#   3. core.health's verdict on that report, as the control plane would judge it (a sound
#      machine must come out healthy: a false "unhealthy" would cordon good GPUs);
# and last, one line in bench/BENCH.md's format:
#   {"bench": "gpu_smoke", "metric": "gpus", "value": N, ...}
#
# Without an NVIDIA driver it prints {"bench": "gpu_smoke", ..., "skipped": "no NVIDIA driver"}
# and exits 0. A driver whose GPUs NVML cannot list (nvidia-ml-py missing, NVML failing) is
# an error: exit 1.
#
# Run: bash bench/gpu_smoke.sh   (with the repo's .venv, else python3 with corral importable)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$here/.venv/bin/python" ]]; then
    py="$here/.venv/bin/python"
else
    py="python3"
    export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
fi

exec "$py" - <<'EOF'
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from corral.agent.health import HealthMonitor
from corral.agent.inventory import detect_gpus
from corral.core.health import HealthFacts, assess
from corral.wire.health import HealthReport

BENCH = {"bench": "gpu_smoke", "metric": "gpus"}
DRIVER = Path("/proc/driver/nvidia/version")


def section(title: str, text: str) -> None:
    print(f"== {title}", flush=True)
    print(text, flush=True)


async def one_report(monitor: HealthMonitor) -> HealthReport:
    await monitor.check()
    _, report = await monitor.next_report(0)  # the current report, marked full
    return report


def main() -> int:
    hostname = socket.gethostname()
    started = time.monotonic()
    gpus = detect_gpus(None, hostname)
    detect_s = time.monotonic() - started
    if gpus.backend != "nvml":
        if not DRIVER.exists():
            print(json.dumps({**BENCH, "skipped": "no NVIDIA driver", "note": gpus.note}))
            return 0
        # A driver is loaded but NVML lists nothing: that is what this script is here to find.
        section("inventory", json.dumps({"backend": gpus.backend, "note": gpus.note}, indent=2))
        print(json.dumps({**BENCH, "error": f"NVIDIA driver loaded, but {gpus.note}"}))
        return 1
    inventory = {
        "backend": gpus.backend,
        "note": gpus.note,
        "gpus": [g.model_dump(mode="json") for g in gpus.gpus],
    }
    section("inventory", json.dumps(inventory, indent=2))

    with tempfile.TemporaryDirectory(prefix="corral-gpu-smoke-") as tmp:
        state = Path(tmp)
        monitor = HealthMonitor(
            gpus, {"state": state, "workload": state}, state, node_name=hostname
        )
        try:
            started = time.monotonic()
            report = asyncio.run(one_report(monitor))
            check_s = time.monotonic() - started
        finally:
            monitor.close()
    section("health report", report.model_dump_json(indent=2))

    facts = HealthFacts(report=report, inventory=tuple((g.index, g.uuid) for g in gpus.gpus))
    verdict = assess(facts).to_json()
    section("verdict (core.health)", json.dumps(verdict, indent=2))

    unknown = sorted({f"gpu{g.index}:{u}" for g in report.gpus for u in g.unknown})
    unknown += [f"node:{u}" for u in report.node.unknown]
    models = sorted({g.model for g in gpus.gpus})
    version = DRIVER.read_text(errors="replace").splitlines()[0] if DRIVER.exists() else None
    out = {
        **BENCH,
        "value": len(gpus.gpus),
        "unit": "gpus",
        "higher_is_better": True,
        "extra": {
            "health": verdict["health"],
            "takes_work": verdict["takes_work"],
            "summary": verdict["summary"],
            "gpus_seen": report.node.gpus_seen,
            "unknown_signals": unknown,
            "xids": sum(len(g.xids) for g in report.gpus),
            "detect_s": round(detect_s, 3),
            "check_s": round(check_s, 3),
        },
        "conditions": {
            "models": models,
            "driver": version,
            "hostname": hostname,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
    }
    print(json.dumps(out))
    return 0


sys.exit(main())
EOF
