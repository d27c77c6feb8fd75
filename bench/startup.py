"""Startup: CLI cold start and control plane start-to-first-200, corral vs SkyPilot vs dstack.

Run from the repository root:  .venv/bin/python bench/startup.py

1. `corral --help` vs `sky --help` vs `dstack --help`: one warm-up run each (the first run
   after an install compiles .pyc files), then the median of --cli-reps runs, interleaved.
2. Process start to the first HTTP 200 on loopback: `corral up --detach` (GET /healthz) vs
   `sky api start` (GET /api/health) vs `dstack server` (GET /healthcheck), each in a fresh
   state directory on a free port; the median of --server-reps runs, interleaved. A server
   not up within --server-timeout seconds counts as failed (null, with the reason in extra).

The peers are installed from PyPI into their own virtualenvs under --peers-dir (default
bench/.peers/), once. Every process this script starts carries a tag in its environment;
after each server run anything still alive with that tag is stopped, so no server outlives
the run. Progress goes to stderr; the last line on stdout is the JSON result (see BENCH.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

REPO = Path(__file__).resolve().parent.parent
CORRAL_VENV = REPO / ".venv"
TAG_VAR = "CORRAL_BENCH_STARTUP_TAG"
TAG = uuid.uuid4().hex
LOOPBACK = "127.0.0.1"
POLL_INTERVAL_S = 0.025
INSTALL_TIMEOUT_S = 1800.0
HELP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
# Loopback polls must never go through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_PROBLEM = re.compile(r"(?i)\berror\b|\w(Error|Exception)\b|StopIteration|failed")


def log(msg: str) -> None:
    print(f"[startup] {msg}", file=sys.stderr, flush=True)


# -- peers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    name: str  # the key used in the output: "sky", "dstack"
    requirement: str  # what pip installs
    dist: str  # the distribution whose version is recorded
    exe: str  # the console script

    def venv(self, peers_dir: Path) -> Path:
        return peers_dir / self.name

    def bin(self, peers_dir: Path) -> Path:
        return self.venv(peers_dir) / "bin" / self.exe


SKY = Peer("sky", "skypilot", "skypilot", "sky")
# `dstack server` needs the server extra; the bare package is only the client.
DSTACK = Peer("dstack", "dstack[server]", "dstack", "dstack")
PEERS = (SKY, DSTACK)


def ensure_peer(peer: Peer, peers_dir: Path) -> None:
    """Install the peer into its own virtualenv unless a finished install is there."""
    venv = peer.venv(peers_dir)
    stamp = venv / ".bench-installed"
    if stamp.is_file() and stamp.read_text().strip() == peer.requirement:
        return
    log(f"installing {peer.requirement} into {venv} (a few minutes, once)")
    if not (venv / "bin" / "python").exists():
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, stdout=sys.stderr, timeout=300
        )
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, peer.requirement], check=True, stdout=sys.stderr, timeout=INSTALL_TIMEOUT_S
    )
    stamp.write_text(peer.requirement + "\n")
    log(f"installed {peer.requirement} ({dir_size_mb(venv):.0f} MB)")


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def dist_version(python: Path, dist: str) -> str | None:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    try:
        done = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


# -- processes --------------------------------------------------------------------------------


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of every process started here: a fresh HOME, loopback unproxied."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        {
            "HOME": str(home),
            TAG_VAR: TAG,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **extra,
        }
    )
    return env


def spawn(
    argv: Sequence[str], env: dict[str, str], output: IO[bytes] | int
) -> subprocess.Popen[bytes]:
    # A session of its own, so its whole process group can be killed.
    return subprocess.Popen(
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after grace_s; reap the leader."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.poll()


def sweep_tagged(grace_s: float = 10.0) -> int:
    """Stop every process still alive that this run started (its environment has our tag)."""
    found: list[psutil.Process] = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(TAG_VAR) == TAG:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    for p in found:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(found, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5.0)
    return len(found)


def run_quiet(argv: Sequence[str], env: dict[str, str], timeout_s: float) -> int:
    proc = spawn(argv, env, subprocess.DEVNULL)
    try:
        return proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            kill_group(proc, grace_s=2.0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# -- 1. CLI cold start ------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    exe: Path
    samples: list[float] = field(default_factory=list)
    error: str | None = None


def time_help(tool: Tool, home: Path) -> float | None:
    env = child_env(home, CORRAL_HOME=str(home / "corral"))
    start = time.perf_counter()
    try:
        rc = run_quiet([str(tool.exe), "--help"], env, HELP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        tool.error = f"`{tool.exe.name} --help` took over {HELP_TIMEOUT_S:.0f} s"
        return None
    elapsed = time.perf_counter() - start
    if rc != 0:
        tool.error = f"`{tool.exe.name} --help` exited {rc}"
        return None
    return elapsed


def bench_cli(tools: list[Tool], reps: int, scratch: Path) -> None:
    homes = {t.name: scratch / f"help-{t.name}" for t in tools}
    for home in homes.values():
        home.mkdir()
    for t in tools:  # warm-up: .pyc compilation, first-run state files
        if t.error is None:
            time_help(t, homes[t.name])
    for i in range(reps):
        for t in tools:
            if t.error is not None:
                continue
            elapsed = time_help(t, homes[t.name])
            if elapsed is not None:
                t.samples.append(elapsed)
        log(
            f"cli rep {i + 1}/{reps}: "
            + ", ".join(f"{t.name} {t.samples[-1]:.3f}s" for t in tools if t.samples)
        )


# -- 2. control plane start to first 200 ------------------------------------------------------


@dataclass(frozen=True)
class ServerRun:
    """How to start one control plane, where it answers, and how to stop it."""

    argv: list[str]
    env: dict[str, str]
    health_url: str
    stop_argv: list[str] | None  # None: the start command is the server; kill its group


@dataclass
class ServerResult:
    ready_s: float | None = None
    returned_s: float | None = None  # when the start command itself exited (detached ones)
    returned_rc: int | None = None
    error: str | None = None  # no 200: the plane failed
    timed_out: bool = False
    warning: str | None = None  # a 200 came, but the start command then failed


def http_ok(url: str) -> bool:
    try:
        with _HTTP.open(url, timeout=2.0) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(path: Path, lines: int = 3) -> str:
    """The last error lines of a log, else its last lines: enough to say why in one line."""
    try:
        text = [ln.strip(" │╭╮╰╯─") for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    text = [ln for ln in text if ln]
    errors = [ln for ln in text if _PROBLEM.search(ln)]
    return " | ".join((errors or text)[-lines:])[:500]


def wait_ready(
    proc: subprocess.Popen[bytes],
    run: ServerRun,
    start: float,
    timeout_s: float,
    result: ServerResult,
    log_path: Path,
) -> None:
    deadline = start + timeout_s
    while time.perf_counter() < deadline:
        if http_ok(run.health_url):
            result.ready_s = time.perf_counter() - start
            return
        rc = proc.poll()
        if rc is not None and result.returned_rc is None:
            result.returned_s, result.returned_rc = time.perf_counter() - start, rc
        if rc not in (None, 0):  # a detaching command may exit 0 before its server answers
            result.error = f"exited {rc} before {run.health_url} answered: {log_tail(log_path)}"
            return
        time.sleep(POLL_INTERVAL_S)
    result.error = f"no 200 from {run.health_url} within {timeout_s:.0f} s: {log_tail(log_path)}"
    result.timed_out = True


def wait_returned(
    proc: subprocess.Popen[bytes], start: float, timeout_s: float, result: ServerResult
) -> None:
    """For a detaching start command: when did it return, and how."""
    if result.returned_rc is not None:
        return
    try:
        rc = proc.wait(timeout=max(0.0, start + timeout_s - time.perf_counter()))
    except subprocess.TimeoutExpired:
        return
    result.returned_s, result.returned_rc = time.perf_counter() - start, rc


def stop_server(proc: subprocess.Popen[bytes], run: ServerRun, log_path: Path) -> None:
    if run.stop_argv is not None:
        with log_path.open("ab") as out:
            stopper = spawn(run.stop_argv, run.env, out)
            try:
                stopper.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log(f"`{' '.join(run.stop_argv)}` took over {STOP_TIMEOUT_S:.0f} s")
            finally:
                kill_group(stopper, grace_s=2.0)
    kill_group(proc)


def measure_server(run: ServerRun, timeout_s: float, log_path: Path) -> ServerResult:
    result = ServerResult()
    with log_path.open("ab") as out:
        start = time.perf_counter()
        proc = spawn(run.argv, run.env, out)
    try:
        wait_ready(proc, run, start, timeout_s, result, log_path)
        if run.stop_argv is not None and result.error is None:
            wait_returned(proc, start, timeout_s, result)
            if result.returned_rc not in (None, 0):
                result.warning = (
                    f"`{' '.join(run.argv[1:3])}` exited {result.returned_rc} "
                    f"after the first 200: {log_tail(log_path)}"
                )
    finally:
        try:
            stop_server(proc, run, log_path)
        finally:
            swept = sweep_tagged()
            if swept:
                log(f"stopped {swept} leftover process(es) after `{' '.join(run.argv[:3])}`")
    return result


def corral_run(corral: Path, home: Path) -> ServerRun:
    port = free_port()
    env = child_env(home, CORRAL_HOME=str(home / "corral"))
    return ServerRun(
        argv=[str(corral), "up", "--detach", "--host", LOOPBACK, "--port", str(port)],
        env=env,
        health_url=f"http://{LOOPBACK}:{port}/healthz",
        stop_argv=[str(corral), "down"],
    )


def sky_run(sky: Path, home: Path) -> ServerRun:
    port = free_port()
    # The variable lets `sky api stop` find a server on a non-default port; usage collection
    # is off because this machine has no route out and its attempts are not startup work.
    env = child_env(
        home, SKYPILOT_API_SERVER_LOCAL_PORT=str(port), SKYPILOT_DISABLE_USAGE_COLLECTION="1"
    )
    return ServerRun(
        argv=[str(sky), "api", "start", "--host", LOOPBACK, "--port", str(port)],
        env=env,
        health_url=f"http://{LOOPBACK}:{port}/api/health",
        stop_argv=[str(sky), "api", "stop"],
    )


def dstack_run(dstack: Path, home: Path) -> ServerRun:
    port = free_port()
    env = child_env(home)
    return ServerRun(
        argv=[str(dstack), "server", "--host", LOOPBACK, "--port", str(port), "-y"],
        env=env,
        health_url=f"http://{LOOPBACK}:{port}/healthcheck",
        stop_argv=None,
    )


@dataclass
class Plane:
    name: str
    exe: Path
    make: Callable[[Path, Path], ServerRun]
    results: list[ServerResult] = field(default_factory=list)
    error: str | None = None  # the last failed run's reason, or why it never ran
    warning: str | None = None
    gave_up: bool = False  # after a timeout, or when it is not installed

    def ready(self) -> list[float]:
        return [r.ready_s for r in self.results if r.ready_s is not None]

    def failures(self) -> str | None:
        failed = sum(r.ready_s is None for r in self.results)
        if not failed:
            return self.error
        return f"{failed}/{len(self.results)} runs failed; the last: {self.error}"


def keep_logs(log_path: Path, home: Path, name: str) -> Path:
    """Copy a failed run's output and state directory out of the scratch space."""
    dest = Path(tempfile.gettempdir()) / f"corral-bench-startup-logs-{TAG[:8]}" / name
    dest.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        shutil.copy2(log_path, dest / "start.log")
    with contextlib.suppress(OSError, shutil.Error):
        shutil.copytree(
            home, dest / "home", ignore=shutil.ignore_patterns("*.sock"), dirs_exist_ok=True
        )
    return dest


def bench_servers(planes: list[Plane], reps: int, timeout_s: float, scratch: Path) -> None:
    for i in range(reps):
        for p in planes:
            if p.gave_up:
                continue
            home = scratch / f"server-{p.name}-{i}"
            home.mkdir()
            log_path = scratch / f"{p.name}-{i}.log"
            res = measure_server(p.make(p.exe, home), timeout_s, log_path)
            p.results.append(res)
            if res.error is not None or res.warning is not None:
                kept = keep_logs(log_path, home, f"{p.name}-{i}")
                res.error = res.error and f"{res.error} (logs: {kept})"
                res.warning = res.warning and f"{res.warning} (logs: {kept})"
            if res.error is not None:
                p.error = res.error
                p.gave_up = res.timed_out  # don't spend another timeout on it
            if res.warning is not None:
                p.warning = res.warning
            shown = "failed" if res.ready_s is None else f"{res.ready_s:.2f}s"
            log(
                f"server rep {i + 1}/{reps}: {p.name} {shown}"
                + (f" ({res.error})" if res.error else "")
            )


# -- output -----------------------------------------------------------------------------------


def median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def build_result(
    tools: dict[str, Tool],
    planes: dict[str, Plane],
    versions: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    help_s = {n: median(t.samples) for n, t in tools.items()}
    ready_s = {n: median(p.ready()) for n, p in planes.items()}
    corral_plane = planes.get("corral")
    up_returned = [
        r.returned_s
        for r in (corral_plane.results if corral_plane else [])
        if r.returned_rc == 0 and r.returned_s is not None
    ]
    errors: dict[str, str | None] = {f"{n}_help": t.error for n, t in tools.items() if t.error}
    errors.update({f"{n}_server": p.failures() for n, p in planes.items() if p.error})
    errors.update({f"{n}_up": p.warning for n, p in planes.items() if p.warning})
    extra: dict[str, Any] = {
        "dstack_help_s": help_s.get("dstack"),
        "server_ready_s": ready_s.get("corral"),
        "sky_server_ready_s": ready_s.get("sky"),
        "dstack_server_ready_s": ready_s.get("dstack"),
        "server_ratio_vs_sky": ratio(ready_s.get("corral"), ready_s.get("sky")),
        "server_ratio_vs_dstack": ratio(ready_s.get("corral"), ready_s.get("dstack")),
        # `corral up --detach` returns only once the local agent has registered too.
        "corral_up_detach_s": median(up_returned),
        "help_samples_s": {n: [round(x, 4) for x in t.samples] for n, t in tools.items()},
        "server_samples_s": {n: [round(x, 4) for x in p.ready()] for n, p in planes.items()},
    }
    if errors:
        extra["errors"] = errors
    return {
        "bench": "startup",
        "metric": "cli_help_s",
        "value": help_s.get("corral"),
        "unit": "s",
        "higher_is_better": False,
        "baseline": "sky",
        "baseline_value": help_s.get("sky"),
        "ratio": ratio(help_s.get("corral"), help_s.get("sky")),
        "extra": extra,
        "conditions": {
            "repetitions": args.cli_reps,
            "server_repetitions": args.server_reps,
            "warmups": 1,
            "server_timeout_s": args.server_timeout,
            **versions,
            "python": platform.python_version(),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}",
            "health_urls": {"corral": "/healthz", "sky": "/api/health", "dstack": "/healthcheck"},
            "peer_env": {"sky": "SKYPILOT_DISABLE_USAGE_COLLECTION=1"},
        },
    }


# -- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--peers-dir",
        type=Path,
        default=REPO / "bench" / ".peers",
        help="where the peers' virtualenvs live (installed if missing)",
    )
    ap.add_argument("--cli-reps", type=int, default=5)
    ap.add_argument("--server-reps", type=int, default=3)
    ap.add_argument(
        "--server-timeout",
        type=float,
        default=90.0,
        help="seconds a server may take to answer 200 before it counts as failed",
    )
    return ap.parse_args()


def corral_exe() -> Path:
    exe = CORRAL_VENV / "bin" / "corral"
    if exe.exists():
        return exe
    found = shutil.which("corral")
    return Path(found) if found else exe


def prepare_peers(peers_dir: Path) -> dict[str, str | None]:
    """Install what is missing; a peer that cannot be installed is reported, not fatal."""
    errors: dict[str, str | None] = {}
    for peer in PEERS:
        try:
            ensure_peer(peer, peers_dir)
            errors[peer.name] = None
        except (OSError, subprocess.SubprocessError) as exc:
            errors[peer.name] = f"install of {peer.requirement} failed: {exc}"
            log(errors[peer.name] or "")
    return errors


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args()
    peers_dir = args.peers_dir.resolve()
    install_errors = prepare_peers(peers_dir)
    corral = corral_exe()
    versions = {
        "corral_version": dist_version(corral.parent / "python", "corral"),
        "sky_version": dist_version(SKY.venv(peers_dir) / "bin" / "python", SKY.dist),
        "dstack_version": dist_version(DSTACK.venv(peers_dir) / "bin" / "python", DSTACK.dist),
    }
    log(f"versions: {versions}")
    exes = {"corral": corral, "sky": SKY.bin(peers_dir), "dstack": DSTACK.bin(peers_dir)}
    tools = {n: Tool(n, exe, error=install_errors.get(n)) for n, exe in exes.items()}
    for t in tools.values():
        if t.error is None and not t.exe.exists():
            t.error = f"{t.exe} does not exist"
    makers = {"corral": corral_run, "sky": sky_run, "dstack": dstack_run}
    planes = {
        n: Plane(n, exe, makers[n], error=tools[n].error, gave_up=tools[n].error is not None)
        for n, exe in exes.items()
    }
    with tempfile.TemporaryDirectory(prefix="corral-bench-startup-") as tmp:
        scratch = Path(tmp)
        try:
            bench_cli(list(tools.values()), args.cli_reps, scratch)
            bench_servers(list(planes.values()), args.server_reps, args.server_timeout, scratch)
        finally:
            sweep_tagged()
    emit(build_result(tools, planes, versions, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
