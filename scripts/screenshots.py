"""`make screenshots`: the console's main pages as PNGs under docs/screenshots/.

Starts a small cluster of real processes on loopback (a control plane, a gateway and four
fake-GPU agents in two providers), gives it work (training that reports its steps, a pending
job too big for the fleet, a failed one, an endpoint under load, a cordoned node, a saved
simulator run), then opens each page in Debian's headless Chromium and saves it. Everything
runs under a temporary CORRAL_HOME and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ADMIN = "crl_screenshots_admin"
JOIN = "crj_screenshots_join"
PY = sys.executable
AGENTS = [
    (
        "gpu-us-1",
        "H100:8",
        {"provider": "aws", "region": "us-east-1", "zone": "us-east-1a", "rack": "r01"},
    ),
    (
        "gpu-us-2",
        "H100:8",
        {"provider": "aws", "region": "us-east-1", "zone": "us-east-1a", "rack": "r02"},
    ),
    ("lab-a100-1", "A100:4", {"provider": "ssh", "region": "lab", "zone": "lab-1", "rack": "r07"}),
    ("lab-a100-2", "A100:4", {"provider": "ssh", "region": "lab", "zone": "lab-1", "rack": "r07"}),
]
TRAIN = (
    "import random, time\n"
    "from corral.train import report\n"
    "loss = 4.0\n"
    "for step in range(100000):\n"
    "    loss = max(0.2, loss * 0.995 + random.uniform(-0.01, 0.01))\n"
    "    speed = random.randint(41000, 43000)\n"
    "    print(f'step {step:>5} loss {loss:.4f} lr 3e-4 tokens/s {speed}', flush=True)\n"
    "    report(step)\n"
    "    time.sleep(0.4)\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = probe()
            if value:
                return value
        time.sleep(0.2)
    raise SystemExit(f"screenshots: timed out waiting for {what}")


@contextlib.contextmanager
def cluster(root: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    port, gw_port = free_port(), free_port()
    url, gateway = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{gw_port}"
    env = {
        **os.environ,
        "CORRAL_HOME": str(root / "home"),
        "CORRAL_BOOTSTRAP_ADMIN_TOKEN": ADMIN,
        "CORRAL_BOOTSTRAP_JOIN_TOKEN": JOIN,
        "CORRAL_GATEWAY_PUBLIC_URL": gateway,
        "CORRAL_SERVER": url,
        "CORRAL_TOKEN": ADMIN,
        "CORRAL_WORKSPACE": "default",
    }
    env.pop("CORRAL_DATABASE_URL", None)
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], log: str) -> None:
        out = (root / log).open("wb")
        procs.append(
            subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
        )

    try:
        start([PY, "-m", "corral.server", "--port", str(port)], "server.log")
        wait_for("the server", lambda: httpx.get(url + "/healthz").status_code == 200)
        start(
            [
                PY,
                "-m",
                "corral.gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(gw_port),
                "--server",
                url,
                "--token",
                ADMIN,
                "--id",
                "gw-1",
            ],
            "gateway.log",
        )
        for name, gpus, labels in AGENTS:
            argv = [
                PY,
                "-m",
                "corral.cli.main",
                "agent",
                "--server",
                url,
                "--join-token",
                JOIN,
                "--name",
                name,
                "--state-dir",
                str(root / "agents" / name),
                "--isolation",
                "none",
                "--fake-gpus",
                gpus,
                "--health-interval",
                "2",
            ]
            for k, v in labels.items():
                argv += ["--label", f"{k}={v}"]
            start(argv, f"agent-{name}.log")
        yield url, gateway, env
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        # Replicas and lifelines started by the agents go too.
        subprocess.run(["pkill", "-KILL", "-f", str(root)], check=False)


def corral(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [PY, "-m", "corral.cli.main", *args], env=env, check=True, stdout=subprocess.DEVNULL
    )


def give_work(url: str, gateway: str, env: dict[str, str]) -> None:
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    wait_for(
        "four ready nodes",
        lambda: sum(n["condition"] == "ready" for n in api.get("/v1/nodes").json()["nodes"]) == 4,
    )
    api.post("/v1/workspaces", json={"name": "research"})
    jobs = "/v1/workspaces/{}/jobs"

    def job(ws: str, spec: dict[str, Any]) -> None:
        api.post(jobs.format(ws), json=spec).raise_for_status()

    job(
        "default",
        {
            "name": "llama-8b-finetune",
            "replicas": 2,
            "priority": "train",
            "command": f"{PY} train.py",
            "files": {"train.py": TRAIN},
            "resources": {"gpus": "H100:4"},
        },
    )
    job(
        "research",
        {
            "name": "vit-sweep-lr3e-4",
            "command": f"{PY} train.py",
            "files": {"train.py": TRAIN},
            "resources": {"gpus": "A100:2"},
        },
    )
    job(
        "research",
        {"name": "pretrain-70b", "command": "true", "replicas": 4, "resources": {"gpus": "H100:8"}},
    )
    job(
        "default",
        {"name": "data-check", "command": "echo rows: 1204331; exit 3", "resources": {"cpus": 0.5}},
    )
    job("default", {"name": "tokenize-shards", "command": "echo done", "resources": {"cpus": 0.5}})
    api.post(
        "/v1/workspaces/default/endpoints",
        json={
            "name": "embed",
            "command": f"{PY} -m http.server $PORT",
            "auth": "public",
            "readiness": {"path": "/"},
            "min_replicas": 2,
            "max_replicas": 4,
            "resources": {"gpus": "A100:1"},
        },
    ).raise_for_status()
    api.post("/v1/nodes/lab-a100-2/cordon")
    api.put("/v1/workspaces/default/quota", json={"gpus": {"H100": 8}})
    api.put("/v1/workspaces/research/quota", json={"gpus": {"H100": 4, "A100": 2}})
    # A GPU that overheats and one with an uncorrectable ECC error, on the idle node.
    api.post("/v1/nodes/gpu-us-2/faults", json={"kind": "thermal", "gpu": 5})
    api.post("/v1/nodes/gpu-us-2/faults", json={"kind": "ecc_uncorrected", "gpu": 2})
    wait_for(
        "the endpoint to serve",
        lambda: api.get("/v1/workspaces/default/endpoints/embed").json()["ready_replicas"] >= 1,
        90,
    )
    wait_for(
        "the gateway to route it", lambda: httpx.get(f"{gateway}/ep/embed/").status_code == 200
    )
    # A simulator run for the Simulation page (saved under CORRAL_HOME).
    subprocess.run(
        [PY, "-m", "corral.cli.main", "sim", "--format", "bursty", "--seed", "1"],
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
    )


def load(gateway: str, seconds: float, stop: threading.Event) -> None:
    with httpx.Client(timeout=10) as http:
        end = time.monotonic() + seconds
        rate = 5.0
        while time.monotonic() < end and not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                http.get(f"{gateway}/ep/embed/")
            rate = min(40.0, rate * 1.02)
            time.sleep(1 / rate)


def shoot(url: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    saved = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(base_url=url, viewport={"width": 1440, "height": 900})
        page.goto("/ui/login")
        page.get_by_test_id("token").fill(ADMIN)
        page.get_by_test_id("login").click()
        page.get_by_test_id("who").wait_for()
        for name, path in [
            ("fleet", "/ui/fleet"),
            ("node", "/ui/nodes/gpu-us-1"),
            ("workloads", "/ui/workloads?workspace=&kind=all"),
            ("job", "/ui/jobs/default/llama-8b-finetune"),
            ("endpoint", "/ui/endpoints/default/embed"),
            ("queue", "/ui/queue"),
            ("simulation", "/ui/sim"),
        ]:
            page.goto(path)
            page.wait_for_load_state("networkidle")
            time.sleep(2.5)  # a poll and a chart redraw: what a person sees after a moment
            target = OUT / f"{name}.png"
            page.screenshot(path=str(target), full_page=True)
            saved.append(target)
        browser.close()
    return saved


def main() -> None:
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"screenshots need {CHROMIUM}: apt-get install chromium")
    root = Path(tempfile.mkdtemp(prefix="corral-shots-"))
    try:
        with cluster(root) as (url, gateway, env):
            give_work(url, gateway, env)
            stop = threading.Event()
            loader = threading.Thread(target=load, args=(gateway, 120, stop), daemon=True)
            loader.start()
            time.sleep(25)  # the charts need a history to show
            saved = shoot(url)
            stop.set()
        for path in saved:
            print(f"saved {path.relative_to(ROOT)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
