"""Scale from zero: a request's first byte, less the replica's own startup time.

The gateway (in this process, on uvloop) serves an endpoint with no replica. A request
arrives; the gateway holds it and wakes the autoscaler hook, which — standing in for the
control plane and an agent — starts a mock model server (tests/support/mock_openai.py
with a STARTUP_DELAY_S "model load"), polls its readiness every POLL_S and publishes it
as ready. The figure is (request → first byte) - (replica spawn → ready): what holding,
waking and releasing cost on top of the replica's own start. The replica's standalone
start time is measured too, for scale.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from corral.gateway import Gateway, StaticRouteSource
from corral.wire.gateway import EndpointRoute, ReplicaRoute, RouteTable, Wake

TRIALS = 5
STARTUP_DELAY_S = 1.0
POLL_S = 0.01
MOCK = Path(__file__).resolve().parent.parent / "tests" / "support" / "mock_openai.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.spawned = time.monotonic()
        self.ready_at = 0.0
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(MOCK),
                "--port",
                str(self.port),
                "--startup-delay",
                str(STARTUP_DELAY_S),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    async def wait_ready(self, client: httpx.AsyncClient) -> float:
        while True:
            try:
                if (await client.get(f"{self.url}/health", timeout=1)).status_code == 200:
                    self.ready_at = time.monotonic()
                    return self.ready_at - self.spawned
            except httpx.HTTPError:
                pass
            await asyncio.sleep(POLL_S)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def table(version: int, replica: Replica | None) -> RouteTable:
    replicas = [] if replica is None else [ReplicaRoute(id="r", url=replica.url, state="ready")]
    return RouteTable(
        version=version,
        endpoints=[
            EndpointRoute(name="chat", workspace="default", replicas=replicas, hold_timeout_s=60)
        ],
    )


async def run() -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        "standalone_startup": [],
        "first_byte": [],
        "startup": [],
        "wake": [],
        "release": [],
        "overhead": [],
    }
    async with httpx.AsyncClient() as poller:
        for _ in range(3):
            replica = Replica()
            out["standalone_startup"].append(await replica.wait_ready(poller))
            replica.stop()

        version = 1
        source = StaticRouteSource(table(version, None))
        woken: dict[str, float] = {}
        current: list[Replica] = []

        async def autoscaler(wake: Wake) -> None:
            nonlocal version
            if current:
                return
            woken["at"] = time.monotonic()
            replica = Replica()
            current.append(replica)
            await replica.wait_ready(poller)
            version += 1
            source.set(table(version, replica))

        source = StaticRouteSource(table(version, None), on_wake=autoscaler)
        gateway = Gateway(source)
        port = await gateway.start("127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/ep/chat/v1/chat/completions"
        try:
            for trial in range(TRIALS):
                await gateway.wait_for_routes(version)
                async with httpx.AsyncClient(timeout=60) as client:
                    sent = time.monotonic()
                    async with client.stream("POST", url, json={"max_tokens": 1}) as response:
                        first_byte = time.monotonic()
                        await response.aread()
                    assert response.status_code == 200, response.status_code
                replica = current[0]
                startup = replica.ready_at - replica.spawned
                out["first_byte"].append(first_byte - sent)
                out["startup"].append(startup)
                out["wake"].append(woken["at"] - sent)
                out["release"].append(first_byte - replica.ready_at)
                out["overhead"].append(first_byte - sent - startup)
                print(
                    f"trial {trial + 1}/{TRIALS}: first byte {first_byte - sent:.3f} s, "
                    f"replica startup {startup:.3f} s",
                    file=sys.stderr,
                )
                replica.stop()
                current.clear()
                version += 1
                source.set(table(version, None))  # back to zero
        finally:
            await gateway.stop()
            for replica in current:
                replica.stop()
    return out


def main() -> None:
    try:
        import uvloop

        data = uvloop.run(run())
    except ImportError:
        data = asyncio.run(run())
    med = {k: statistics.median(v) for k, v in data.items()}
    print(
        json.dumps(
            {
                "bench": "scale_from_zero",
                "metric": "first_byte_minus_startup_s",
                "value": round(med["overhead"], 4),
                "unit": "s",
                "higher_is_better": False,
                "extra": {
                    "first_byte_s": round(med["first_byte"], 4),
                    "replica_startup_s": round(med["startup"], 4),
                    "standalone_startup_s": round(med["standalone_startup"], 4),
                    "wake_ms": round(med["wake"] * 1000, 3),
                    "ready_to_first_byte_ms": round(med["release"] * 1000, 3),
                    "max_overhead_s": round(max(data["overhead"]), 4),
                },
                "conditions": {
                    "trials": TRIALS,
                    "replica": "tests/support/mock_openai.py",
                    "replica_startup_delay_s": STARTUP_DELAY_S,
                    "readiness_poll_s": POLL_S,
                    "autoscaler": "in-process hook standing in for control plane + agent",
                    "cpus": os.cpu_count(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
