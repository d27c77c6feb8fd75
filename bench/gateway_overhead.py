"""Latency and throughput added by corral's gateway, side by side with nginx.

One replica — nginx serving a fixed 60-byte JSON answer, fast enough that whatever sits in
front of it is the bottleneck — reached three ways with the same load generator (wrk):
directly, through `python -m corral.gateway`, and through nginx configured as a plain
reverse proxy (one worker, upstream keep-alive, no buffering: the same job the gateway
does). Latency is read at low concurrency, throughput at high; the three run interleaved,
ROUNDS times, and medians are reported. nginx and wrk come from Debian's packages and are
installed when missing (as root); without them the script says `skipped`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 3
SECONDS = 4
LATENCY_CONNECTIONS = 4
THROUGHPUT_CONNECTIONS = 64

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {body}
}}
"""
REPLICA = """
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location / {{ default_type application/json;
      return 200 '{{"object":"list","data":[{{"id":"model","object":"model"}}]}}'; }} }}
"""
PROXY = """
  upstream replica {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location /ep/bench/ {{ proxy_pass http://replica/; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_buffering off; }} }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure(binary: str, package: str) -> str | None:
    """The path of `binary`, installing Debian's `package` if missing and root."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, capture_output=True)
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")


def start_nginx(nginx: str, tmp: Path, name: str, body: str) -> subprocess.Popen[bytes]:
    conf = tmp / f"{name}.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, name=name, body=body))
    return subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / f"{name}.err")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(binary: str, url: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "Socket errors" in out:
        raise RuntimeError(f"errors under load at {url}:\n{out}")
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99}


def main() -> None:
    nginx = ensure("nginx", "nginx-light") or ensure("nginx", "nginx")
    load = ensure("wrk", "wrk")
    if load is None:
        print(json.dumps({"bench": "gateway_overhead", "skipped": "wrk is not available"}))
        return
    if nginx is None:
        # The replica is nginx too; without it there is nothing fast enough to measure against.
        print(json.dumps({"bench": "gateway_overhead", "skipped": "nginx is not available"}))
        return
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-gw-"))
    replica_port, proxy_port, gateway_port = free_port(), free_port(), free_port()
    procs = [
        start_nginx(nginx, tmp, "replica", REPLICA.format(port=replica_port)),
        start_nginx(nginx, tmp, "proxy", PROXY.format(port=proxy_port, upstream=replica_port)),
    ]
    routes = tmp / "routes.json"
    replica = {"id": "r0", "url": f"http://127.0.0.1:{replica_port}", "state": "ready"}
    routes.write_text(
        json.dumps(
            {
                "version": 1,
                "endpoints": [
                    {
                        "name": "bench",
                        "workspace": "default",
                        "replicas": [replica],
                    }
                ],
            }
        )
    )
    procs.append(
        subprocess.Popen(
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
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    targets = {
        "direct": f"http://127.0.0.1:{replica_port}/v1/models",
        "corral": f"http://127.0.0.1:{gateway_port}/ep/bench/v1/models",
        "nginx": f"http://127.0.0.1:{proxy_port}/ep/bench/v1/models",
    }
    results: dict[str, dict[str, list[float]]] = {
        name: {"rps": [], "p50_ms": [], "p99_ms": [], "lat_rps": []} for name in targets
    }
    try:
        for port in (replica_port, proxy_port, gateway_port):
            wait_port(port)
        for url in targets.values():
            wrk(load, url, THROUGHPUT_CONNECTIONS, 1)  # warm up connections and caches
        for round_ in range(ROUNDS):
            for name, url in targets.items():
                low = wrk(load, url, LATENCY_CONNECTIONS, SECONDS)
                high = wrk(load, url, THROUGHPUT_CONNECTIONS, SECONDS)
                results[name]["p50_ms"].append(low["p50_ms"])
                results[name]["p99_ms"].append(low["p99_ms"])
                results[name]["lat_rps"].append(low["rps"])
                results[name]["rps"].append(high["rps"])
                print(
                    f"round {round_ + 1}/{ROUNDS} {name:6s}: p50 {low['p50_ms']:.3f} ms, "
                    f"p99 {low['p99_ms']:.3f} ms at c={LATENCY_CONNECTIONS}; "
                    f"{high['rps']:.0f} req/s at c={THROUGHPUT_CONNECTIONS}",
                    file=sys.stderr,
                )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    corral, nginx_r, direct = med["corral"], med["nginx"], med["direct"]
    print(
        json.dumps(
            {
                "bench": "gateway_overhead",
                "metric": "added_p50_ms",
                "value": round(corral["p50_ms"] - direct["p50_ms"], 3),
                "unit": "ms",
                "higher_is_better": False,
                "baseline": "nginx_reverse_proxy",
                "baseline_value": round(nginx_r["rps"], 1),
                "ratio": round(corral["rps"] / nginx_r["rps"], 3),
                "extra": {
                    "added_p99_ms": round(corral["p99_ms"] - direct["p99_ms"], 3),
                    "nginx_added_p50_ms": round(nginx_r["p50_ms"] - direct["p50_ms"], 3),
                    "nginx_added_p99_ms": round(nginx_r["p99_ms"] - direct["p99_ms"], 3),
                    "rps": round(corral["rps"], 1),
                    "nginx_rps": round(nginx_r["rps"], 1),
                    "direct_rps": round(direct["rps"], 1),
                    "p50_ms": {n: round(m["p50_ms"], 3) for n, m in med.items()},
                    "p99_ms": {n: round(m["p99_ms"], 3) for n, m in med.items()},
                    "ratio_is": "corral rps / nginx rps, both one process on one core",
                },
                "conditions": {
                    "rounds": ROUNDS,
                    "seconds_per_run": SECONDS,
                    "latency_connections": LATENCY_CONNECTIONS,
                    "throughput_connections": THROUGHPUT_CONNECTIONS,
                    "load_generator": "wrk -t1",
                    "replica": "nginx returning a fixed 60-byte JSON body",
                    "nginx": version,
                    "nginx_workers": 1,
                    "corral_gateway_processes": 1,
                    "cpus": os.cpu_count(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
