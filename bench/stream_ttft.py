"""Delay the gateway adds to streamed tokens: time to first chunk, and to every chunk.

A mock OpenAI server (tests/support/mock_openai.py) streams SSE chunks INTERVAL apart,
stamping each with the time it was sent. The same client streams from it directly and
through `python -m corral.gateway`, interleaved, CONCURRENCY streams at a time; for each
chunk it records `arrival - sent_at` (one clock: same machine), and for each stream the
time to its first chunk. Added delay is the gateway's quantile minus the direct one.
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
import tempfile
import time
from pathlib import Path

import httpx

ROUNDS = 25
CONCURRENCY = 4
CHUNKS = 20
INTERVAL_S = 0.02
MOCK = Path(__file__).resolve().parent.parent / "tests" / "support" / "mock_openai.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} never became ready")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_stream(client: httpx.AsyncClient, url: str) -> tuple[float, list[float]]:
    """(seconds to first chunk, per-chunk delivery delays in seconds)."""
    delays: list[float] = []
    started = time.time()
    first = 0.0
    buffer = b""
    async with client.stream("POST", url, json={"stream": True, "max_tokens": CHUNKS}) as response:
        async for piece in response.aiter_raw():
            now = time.time()
            buffer += piece
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if not event.startswith(b"data: {"):
                    continue
                if not first:
                    first = now - started
                delays.append(now - json.loads(event[6:])["sent_at"])
    if len(delays) != CHUNKS:
        raise RuntimeError(f"stream from {url} had {len(delays)} chunks, not {CHUNKS}")
    return first, delays


async def measure(urls: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    out = {name: {"ttft": [], "delay": []} for name in urls}
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        for url in urls.values():  # warm-up
            await asyncio.gather(*(one_stream(client, url) for _ in range(CONCURRENCY)))
        for round_ in range(ROUNDS):
            for name, url in urls.items():
                results = await asyncio.gather(
                    *(one_stream(client, url) for _ in range(CONCURRENCY))
                )
                for first, delays in results:
                    out[name]["ttft"].append(first)
                    out[name]["delay"].extend(delays)
            print(f"round {round_ + 1}/{ROUNDS} done", file=sys.stderr)
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-stream-"))
    mock_port, gateway_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    mock = subprocess.Popen(
        [
            sys.executable,
            str(MOCK),
            "--port",
            str(mock_port),
            "--replica-id",
            "r0",
            "--chunk-interval",
            str(INTERVAL_S),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    routes = tmp / "routes.json"
    replica = {"id": "r0", "url": f"http://127.0.0.1:{mock_port}", "state": "ready"}
    routes.write_text(
        json.dumps(
            {
                "version": 1,
                "endpoints": [{"name": "chat", "workspace": "default", "replicas": [replica]}],
            }
        )
    )
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral.gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(gateway_port),
            "--routes",
            str(routes),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{mock_port}/health")
        wait_ready(f"http://127.0.0.1:{gateway_port}/ep/chat/health")
        data = asyncio.run(
            measure(
                {
                    "direct": f"http://127.0.0.1:{mock_port}/v1/chat/completions",
                    "corral": f"http://127.0.0.1:{gateway_port}/ep/chat/v1/chat/completions",
                }
            )
        )
    finally:
        for proc in (gateway, mock):
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)

    def ms(name: str, key: str, q: float) -> float:
        return quantile(data[name][key], q) * 1000

    added_ttft_p99 = ms("corral", "ttft", 0.99) - ms("direct", "ttft", 0.99)
    print(
        json.dumps(
            {
                "bench": "stream_ttft",
                "metric": "added_ttft_p99_ms",
                "value": round(added_ttft_p99, 3),
                "unit": "ms",
                "higher_is_better": False,
                "baseline": "direct_to_replica",
                "baseline_value": round(ms("direct", "ttft", 0.99), 3),
                "ratio": round(ms("corral", "ttft", 0.99) / ms("direct", "ttft", 0.99), 3),
                "extra": {
                    "added_ttft_p50_ms": round(
                        ms("corral", "ttft", 0.5) - ms("direct", "ttft", 0.5), 3
                    ),
                    "added_chunk_delay_p50_ms": round(
                        ms("corral", "delay", 0.5) - ms("direct", "delay", 0.5), 3
                    ),
                    "added_chunk_delay_p99_ms": round(
                        ms("corral", "delay", 0.99) - ms("direct", "delay", 0.99), 3
                    ),
                    "ttft_p50_ms": {n: round(ms(n, "ttft", 0.5), 3) for n in data},
                    "ttft_p99_ms": {n: round(ms(n, "ttft", 0.99), 3) for n in data},
                    "chunk_delay_p99_ms": {n: round(ms(n, "delay", 0.99), 3) for n in data},
                    "mean_chunk_delay_ms": {
                        n: round(statistics.fmean(data[n]["delay"]) * 1000, 3) for n in data
                    },
                },
                "conditions": {
                    "rounds": ROUNDS,
                    "concurrent_streams": CONCURRENCY,
                    "streams_per_target": ROUNDS * CONCURRENCY,
                    "chunks_per_stream": CHUNKS,
                    "chunk_interval_s": INTERVAL_S,
                    "replica": "tests/support/mock_openai.py (uvicorn)",
                    "client": "httpx.AsyncClient",
                    "cpus": os.cpu_count(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
