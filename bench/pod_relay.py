"""A pod's SSH relay against OpenSSH direct: forward throughput, keystroke echo, heartbeats.

Side by side in one run, on this machine:
- corral: a real control plane and a confined agent (`--isolation user`, needs root), a pod
  whose command is a TCP sink on 127.0.0.1:PORT inside the pod, reached with the real
  OpenSSH client through the config `corral pod ssh-config` writes (ProxyCommand
  `corral pod proxy`: ssh -> proxy -> WebSocket -> server -> WebSocket -> session server).
- openssh_direct (baseline): /usr/sbin/sshd started here with its own config, host key and
  authorized_keys on a free loopback port, the same sink as a local process.

Measured:
- forward_mb_per_s (headline): `ssh -N -L LOCAL:127.0.0.1:PORT`, then MIB MiB pushed through
  LOCAL; timed from the first byte to the sink's acknowledgement that it has them all.
  Median of --reps after a warm-up. MB = 10^6 bytes.
- echo_p50_ms / echo_p99_ms: `ssh -tt NAME cat`, one character at a time; the remote PTY
  echoes it back. --samples per path; added = corral - direct.
- heartbeat_delay_p99_ms: while a transfer saturates the relay, a second WebSocket to the
  same server process (another pod relay, which the server accepts at once) is pinged every
  50 ms; uvicorn answers pings in the event loop that relays the bytes and the agents'
  heartbeats. Reported: the plain ping->pong RTT p99 during the transfer (and idle).
- cpu_share_* (each process's CPU seconds / wall time over the last transfer, from /proc;
  `_sys`: the kernel's part) and cpu_ms_per_mb_* (CPU ms per MB moved): where the path's
  CPU goes, process by process. machine_cpus_busy: the whole machine (other tenants too).
- --profile DIR: one more transfer per path, untimed, under py-spy (flame graphs and
  collapsed stacks of each Python process on the path) and `top`.

Targets (issue 13): throughput >= 0.5x direct and >= 50 MB/s; added echo p99 <= 10 ms;
heartbeat delay p99 <= 200 ms.

Run as root: `.venv/bin/python bench/pod_relay.py [--mib 256] [--reps 3]`.
Without root or OpenSSH it prints a JSON line with "skipped" and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.cluster import ADMIN_TOKEN, Cluster, free_port, wait_for  # noqa: E402

BENCH = "pod_relay"
METRIC = "forward_mb_per_s"
POD = "bench"
CHUNK = 1 << 20
# The sink: per connection, an 8-byte length, then that many bytes; it answers the count.
SINK = """
import socket, struct, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
while True:
    c, _ = s.accept()
    try:
        head = b""
        while len(head) < 8:
            d = c.recv(8 - len(head))
            if not d:
                break
            head += d
        if len(head) == 8:
            n = struct.unpack("!Q", head)[0]
            got = 0
            while got < n:
                d = c.recv(1 << 20)
                if not d:
                    break
                got += len(d)
            c.sendall(b"%d\\n" % got)
    except OSError:
        pass
    c.close()
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=256, help="MiB per timed transfer")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--samples", type=int, default=200, help="keystrokes per path")
    p.add_argument("--ping-interval", type=float, default=0.05, help="s between pings")
    p.add_argument("--keep", action="store_true", help="keep the run's directory")
    p.add_argument(
        "--profile", type=Path, help="also py-spy record the corral path's processes here"
    )
    return p.parse_args()


def skipped(why: str) -> int:
    print(json.dumps({"bench": BENCH, "metric": METRIC, "skipped": why}))
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- processes --------------------------------------------------------------------------------


class Procs:
    """Every process this bench starts, killed (by group) at the end whatever happens."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def popen(self, argv: list[str], log_to: Path, **kw: Any) -> subprocess.Popen[bytes]:
        out = log_to.open("ab")
        proc = subprocess.Popen(
            argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True, **kw
        )
        out.close()
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def cipher_of(log_file: Path) -> str | None:
    """The cipher `ssh -v` negotiated (client -> server)."""
    found = re.search(r"kex: client->server cipher: (\S+)", log_file.read_text(errors="replace"))
    return found.group(1) if found else None


# -- the two paths ----------------------------------------------------------------------------


class Path2:
    """One way to reach the sink: the ssh argv to a host, and its sink port."""

    def __init__(self, name: str, ssh: list[str], sink_port: int, daemon: int = 0) -> None:
        self.name = name
        self.ssh = ssh
        self.sink_port = sink_port
        self.daemon = daemon  # the direct path's sshd


def start_corral(cluster: Cluster, root: Path, sink_port: int) -> Path2:
    """The control plane, a confined agent, the pod with its sink, and ssh-config."""
    cluster.env["HOME"] = str(root / "user")
    cluster.env["PATH"] = f"{REPO / '.venv' / 'bin'}:{cluster.env.get('PATH', '')}"
    (root / "user").mkdir()
    cluster.start_server()
    cluster.agent("n1", isolation="user")
    cluster.wait_node_ready("n1")
    from corral.spec.pod import PodSpec

    command = f"exec python3 -c '{SINK}' {sink_port}"
    with cluster.client() as client:
        client.create_pod(PodSpec(name=POD, command=command))
        wait_for(
            "the pod to run",
            lambda: client.get_pod(POD).state == "running",
            timeout=60,
        )
    corral = str(REPO / ".venv" / "bin" / "corral")
    done = subprocess.run(
        [corral, "pod", "ssh-config"], env=cluster.env, capture_output=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"corral pod ssh-config failed: {done.stderr.decode()[-2000:]}")
    config = root / "user" / ".ssh" / "config"
    ssh = ["ssh", "-F", str(config), "-o", "BatchMode=yes"]
    wait_for(
        "the sink to listen in the pod",
        lambda: (
            subprocess.run(
                [
                    *ssh,
                    POD,
                    f'python3 -c \'import socket; socket.create_connection(("127.0.0.1", '
                    f"{sink_port}))'",
                ],
                env=cluster.env,
                capture_output=True,
                timeout=30,
            ).returncode
            == 0
        ),
        timeout=60,
        interval=0.5,
    )
    return Path2("corral", [*ssh, POD], sink_port)


def start_direct(root: Path, procs: Procs, key: Path) -> Path2:
    d = root / "sshd"
    d.mkdir()
    host_key = d / "host_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
        check=True,
        capture_output=True,
    )
    auth = d / "authorized_keys"
    shutil.copy(key.with_name(key.name + ".pub"), auth)
    port = free_port()
    cfg = d / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {auth}\n"
        "UsePAM no\nPidFile none\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin yes\n"
        "AllowTcpForwarding yes\nPermitTTY yes\nUseDNS no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    # (left in place: Debian's own sshd expects it there too)
    sshd = procs.popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], d / "sshd.log")
    wait_for("sshd to listen", lambda: port_open(port), timeout=10)
    sink_port = free_port()
    procs.popen([sys.executable, "-c", SINK, str(sink_port)], d / "sink.log")
    wait_for("the direct sink to listen", lambda: port_open(sink_port), timeout=10)
    ssh = [
        "ssh", "-F", "/dev/null", "-p", str(port), "-i", str(key), "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    return Path2("direct", [*ssh, "root@127.0.0.1"], sink_port, sshd.pid)


# -- throughput ---------------------------------------------------------------------------------


@contextlib.contextmanager
def forwarding(
    path: Path2, procs: Procs, env: dict[str, str], logs: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes], Path]]:
    local = free_port()
    log_file = logs / f"ssh-L-{path.name}-{local}.log"
    argv = [*path.ssh[:1], "-v", *path.ssh[1:-1], "-N", "-L"]
    argv += [f"{local}:127.0.0.1:{path.sink_port}", path.ssh[-1]]
    proc = procs.popen(argv, log_file, env=env)
    try:
        wait_for(f"ssh -L ({path.name}) to listen", lambda: port_open(local), timeout=30)
        yield local, proc, log_file
    finally:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def push(local: int, size: int, payload: memoryview) -> float:
    """Seconds from the first byte to the sink's acknowledgement of all `size` bytes."""
    with socket.create_connection(("127.0.0.1", local), timeout=120) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        s.sendall(struct.pack("!Q", size))
        left = size
        while left > 0:
            n = min(left, len(payload))
            s.sendall(payload[:n])
            left -= n
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(64)
            if not chunk:
                raise RuntimeError(f"the sink closed before acknowledging: {answer!r}")
            answer += chunk
        elapsed = time.perf_counter() - start
    if int(answer) != size:
        raise RuntimeError(f"the sink got {int(answer)} bytes of {size}")
    return elapsed


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle (all CPUs), from /proc/stat."""
    words = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(w) for w in words]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    children = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        for child in children.read_text().split():
            out += [int(child), *descendants(int(child))]
    return out


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def path_pids(ssh_pid: int, server_pid: int, sshd: int, sink_port: int) -> dict[str, int]:
    """The processes a transfer passes through, by role."""
    pids = {"bench_sender": os.getpid(), "ssh_client": ssh_pid}
    for pid in _all_pids():
        line = cmdline(pid)
        if "struct.unpack" in line and line.rstrip().endswith(str(sink_port)):
            pids["sink"] = pid
    for pid in descendants(ssh_pid):
        if "pod proxy" in cmdline(pid):
            pids["corral_pod_proxy"] = pid
    if sshd:
        below = descendants(sshd)
        if below:  # the connection's unprivileged child, below its privileged monitor
            pids["sshd"] = below[-1]
        return pids
    pids["server"] = server_pid
    sessions = [p for p in _all_pids() if "corral.agent.sessions.enter" in cmdline(p)]
    # enter.py forks: the child (inside the replica) serves; the parent only waits.
    inner = [p for p in sessions if _ppid(p) in sessions]
    if inner or sessions:
        pids["session_server"] = (inner or sessions)[-1]
    return pids


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def throughput(
    path: Path2,
    procs: Procs,
    env: dict[str, str],
    logs: Path,
    args: argparse.Namespace,
    server_pid: int,
    during: Any = None,
) -> dict[str, Any]:
    payload = memoryview(os.urandom(CHUNK))
    size = args.mib * CHUNK
    with forwarding(path, procs, env, logs) as (local, ssh_proc, log_file):
        push(local, 32 * CHUNK, payload)  # warm-up: the session, the sink, the caches
        pids = path_pids(ssh_proc.pid, server_pid, path.daemon, path.sink_port)
        times: list[float] = []
        cpu: dict[str, float] = {}
        per_mb: dict[str, float] = {}
        for _rep in range(args.reps):
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            busy0 = machine_busy()
            wall0 = time.perf_counter()
            with during() if during else contextlib.nullcontext():
                times.append(push(local, size, payload))
            wall = time.perf_counter() - wall0
            # The last repetition's: warm, and the same load as the others.
            cpu = {}
            for k, p in pids.items():
                with contextlib.suppress(OSError):
                    user, system = cpu_seconds(p)
                    cpu[k] = round((user + system - sum(before[k])) / wall, 3)
                    cpu[f"{k}_sys"] = round((system - before[k][1]) / wall, 3)
            cpu["machine_cpus_busy"] = round((machine_busy() - busy0) / wall, 3)
            # CPU milliseconds each process spends per MB moved: what the other tenants of a
            # shared machine change least, and what adds up to the path's cost.
            mb = size / 1e6
            per_mb = {
                k: round(v * wall / mb * 1000, 2)
                for k, v in cpu.items()
                if not k.endswith("_sys") and k != "machine_cpus_busy"
            }
        if args.profile is not None:
            # Apart from the timed ones: py-spy slows what it samples.
            with profiling(args.profile / path.name, pids, procs, logs):
                push(local, size, payload)
        cipher = cipher_of(log_file)
    mbps = [size / t / 1e6 for t in times]
    return {
        "mb_per_s": statistics.median(mbps),
        "runs": mbps,
        "cpu_share": cpu,
        "cpu_ms_per_mb": per_mb,
        "cipher": cipher,
    }


# -- heartbeat stand-in: WebSocket ping -> pong on the same server ---------------------------


class Pinger:
    """A second WebSocket to the server, pinged every `interval` s in a thread of its own."""

    def __init__(self, url: str, token: str, interval: float) -> None:
        self.url = url
        self.token = token
        self.interval = interval
        self.rtts: list[float] = []
        self.mark = threading.Event()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._loop())
        except BaseException as exc:  # reported by the caller
            self.error = exc
            self.ready.set()

    async def _loop(self) -> None:
        from websockets.asyncio.client import connect

        async with connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
            ping_interval=None,
        ) as ws:
            self.ready.set()
            while not self.stop.is_set():
                start = time.perf_counter()
                pong = await ws.ping()
                await asyncio.wait_for(pong, 30)
                self.rtts.append(time.perf_counter() - start)
                await asyncio.sleep(self.interval)

    def sample(self) -> list[float]:
        """The RTTs gathered since the last call."""
        taken, self.rtts = self.rtts, []
        return taken


# -- keystroke echo --------------------------------------------------------------------------


def echo_latency(path: Path2, env: dict[str, str], samples: int) -> list[float]:
    """Milliseconds from writing one character to reading its echo from the remote PTY."""
    import pexpect

    child = pexpect.spawn(
        path.ssh[0], [*path.ssh[1:-1], "-tt", path.ssh[-1], "cat"], env=env, timeout=30
    )
    child.delaybeforesend = None  # pexpect sleeps 50 ms before each send by default
    try:
        child.send("w")
        child.expect_exact("w", timeout=60)  # the session is up
        letters = "abcdefghijklmnopqrstuvxyz"
        out: list[float] = []
        for i in range(samples + 20):
            if i % 60 == 59:  # keep the PTY's line short (canonical mode)
                child.send("\r")
                child.expect_exact("\n")
            c = letters[i % len(letters)]
            start = time.perf_counter()
            child.send(c)
            child.expect_exact(c)
            if i >= 20:  # warm-up
                out.append((time.perf_counter() - start) * 1000)
        return out
    finally:
        child.close(force=True)


# -- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, root: Path, procs: Procs) -> dict[str, Any]:
    logs = root / "logs"
    logs.mkdir()
    sink_port = free_port()
    cluster = Cluster(root)
    try:
        corral = start_corral(cluster, root, sink_port)
        env = cluster.env
        key = Path(env["CORRAL_HOME"]) / "ssh" / "id_ed25519"
        direct = start_direct(root, procs, key)
        assert cluster.server.popen is not None
        server_pid = cluster.server.popen.pid

        log("throughput: direct")
        d_tp = throughput(direct, procs, env, logs, args, server_pid)
        log(f"  {d_tp['mb_per_s']:.1f} MB/s")

        from corral.client.relay import relay_path, ws_url

        pinger = Pinger(ws_url(cluster.url, relay_path("default", "pod", POD)), ADMIN_TOKEN,
                        args.ping_interval)  # fmt: skip
        pinger.thread.start()
        pinger.ready.wait(60)
        if pinger.error:
            raise RuntimeError(f"the pinger could not connect: {pinger.error}")
        time.sleep(2.0)  # idle RTTs
        idle = pinger.sample()
        busy: list[float] = []

        @contextlib.contextmanager
        def sampling() -> Iterator[None]:
            pinger.sample()
            yield
            busy.extend(pinger.sample())

        log("throughput: corral")
        c_tp = throughput(corral, procs, env, logs, args, server_pid, sampling)
        log(f"  {c_tp['mb_per_s']:.1f} MB/s")
        pinger.stop.set()
        pinger.thread.join(10)

        log("echo: direct, corral")
        d_echo = echo_latency(direct, env, args.samples)
        c_echo = echo_latency(corral, env, args.samples)
    except BaseException:
        log(cluster.server.output()[-3000:])
        for agent in cluster.agents.values():
            log(agent.output()[-3000:])
        raise
    finally:
        cluster.close()
    return {
        "direct": d_tp,
        "corral": c_tp,
        "echo_direct": d_echo,
        "echo_corral": c_echo,
        "ping_idle": [x * 1000 for x in idle],
        "ping_busy": [x * 1000 for x in busy],
    }


@contextlib.contextmanager
def profiling(where: Path, pids: dict[str, int], procs: Procs, logs: Path) -> Iterator[None]:
    """py-spy on each Python process of the path (flame graph and collapsed stacks), and
    `top` snapshots, during one more transfer."""
    spy = shutil.which("py-spy") or str(REPO / ".venv" / "bin" / "py-spy")
    where.mkdir(parents=True, exist_ok=True)
    spies = []
    for role, pid in pids.items():
        if role in ("ssh_client", "sshd", "bench_sender"):
            continue
        for fmt, ext in (("flamegraph", "svg"), ("raw", "txt")):
            # The server's event loop is uvloop's, in C: --native (which must pause it to
            # sample); the others are sampled without pausing them.
            mode = ["--native"] if role == "server" else ["--nonblocking"]
            argv = [spy, "record", *mode, "-f", fmt, "-o", str(where / f"{role}.{ext}")]
            argv += ["--pid", str(pid), "-r", "100"]
            spies.append(procs.popen(argv, logs / f"py-spy-{role}-{ext}.log"))
    time.sleep(1.0)  # py-spy attaches
    top = procs.popen(["top", "-b", "-d", "1", "-n", "4", "-w", "200"], where / "top.txt")
    try:
        yield
    finally:
        for p in [*spies, top]:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(60)
        (where / "pids.json").write_text(json.dumps(pids))


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        return skipped("needs root: a confined agent (--isolation user) and an sshd of its own")
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return skipped(f"{tool} (openssh-client) is not installed")
    if not os.access("/usr/sbin/sshd", os.X_OK):
        return skipped("/usr/sbin/sshd (openssh-server) is not installed")
    if args.mib < 1 or args.reps < 1 or args.samples < 10:
        raise SystemExit("--mib >= 1, --reps >= 1, --samples >= 10")
    root = Path(tempfile.mkdtemp(prefix=f"corral-{BENCH}-"))
    os.chmod(root, 0o755)  # the confined workload's user reads nothing here, but may traverse
    procs = Procs()
    try:
        r = run(args, root, procs)
    finally:
        procs.close()
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    value = r["corral"]["mb_per_s"]
    base = r["direct"]["mb_per_s"]
    ce, de = r["echo_corral"], r["echo_direct"]
    busy, idle = r["ping_busy"], r["ping_idle"]
    hb_p99 = pct(busy, 0.99) if busy else None
    added_p99 = pct(ce, 0.99) - pct(de, 0.99)
    out = {
        "bench": BENCH,
        "metric": METRIC,
        "value": round(value, 1),
        "unit": "MB/s",
        "higher_is_better": True,
        "baseline": "openssh_direct",
        "baseline_value": round(base, 1),
        "ratio": round(value / base, 3),
        "extra": {
            "echo_p50_ms": round(pct(ce, 0.5), 2),
            "echo_p99_ms": round(pct(ce, 0.99), 2),
            "echo_direct_p50_ms": round(pct(de, 0.5), 2),
            "echo_direct_p99_ms": round(pct(de, 0.99), 2),
            "echo_added_p50_ms": round(pct(ce, 0.5) - pct(de, 0.5), 2),
            "echo_added_p99_ms": round(added_p99, 2),
            "heartbeat_delay_p99_ms": None if hb_p99 is None else round(hb_p99, 2),
            "heartbeat_delay_kind": "plain WebSocket ping->pong RTT p99 during the transfers",
            "heartbeat_delay_p50_ms": round(pct(busy, 0.5), 2) if busy else None,
            "heartbeat_delay_max_ms": round(max(busy), 2) if busy else None,
            "heartbeat_idle_p99_ms": round(pct(idle, 0.99), 2) if idle else None,
            "heartbeat_samples": len(busy),
            "forward_runs_mb_per_s": [round(x, 1) for x in r["corral"]["runs"]],
            "direct_runs_mb_per_s": [round(x, 1) for x in r["direct"]["runs"]],
            "cpu_share_corral": r["corral"]["cpu_share"],
            "cpu_share_direct": r["direct"]["cpu_share"],
            "cpu_ms_per_mb_corral": r["corral"]["cpu_ms_per_mb"],
            "cpu_ms_per_mb_direct": r["direct"]["cpu_ms_per_mb"],
            "targets": {
                "ratio": 0.5,
                "forward_mb_per_s": 50,
                "echo_added_p99_ms": 10,
                "heartbeat_delay_p99_ms": 200,
            },
            "meets_targets": value / base >= 0.5
            and value >= 50
            and added_p99 <= 10
            and hb_p99 is not None
            and hb_p99 <= 200,
        },
        "conditions": {
            "bytes_per_transfer": args.mib * CHUNK,
            "reps": args.reps,
            "warm_up_bytes": 32 * CHUNK,
            "echo_samples": args.samples,
            "ping_interval_s": args.ping_interval,
            "cipher_corral": r["corral"]["cipher"],
            "cipher_direct": r["direct"]["cipher"],
            "isolation": "user",
            "openssh": _ssh_version(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
    }
    print(json.dumps(out))
    return 0


def _ssh_version() -> str:
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return (done.stderr or done.stdout).strip()


if __name__ == "__main__":
    raise SystemExit(main())
