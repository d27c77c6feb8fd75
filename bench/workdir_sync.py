"""Working-directory sync: a project's first submit and a re-submit after one changed file,
to all replicas running, against `rsync -a` of the same tree over a local sshd, same run.

- The project: --mb MB (default 200) in --files files (default 5,000), generated from a
  seed: 10 large files (40% of the bytes, model weights or a data sample) and the rest
  small, 100 to a directory. Every file's mtime is set an hour back, as a real project's
  files are: the client's hash cache does not trust a file changed in the last 2 s (git's
  "racily clean" rule, client/workdir.py), and a tree generated a moment ago would be all such.
- corral: a real control plane and --nodes unconfined agents on loopback (tests/support/
  cluster.py). A submit is pack (client/workdir.py: ignore rules, chunk hashes, the per-tree
  cache) -> upload (client/artifacts.py: only the blobs the store lacks) -> submit a job of
  --replicas replicas naming the tree -> every replica `running` (each node fetched the
  blobs it lacked and unpacked the tree). Driven through the SDK in this process, not a CLI
  process: the CLI's own start-up is the same for every command and not what is measured.
- rsync (baseline): /usr/sbin/sshd started here with its own config and keys on a free
  loopback port; `rsync -a -e ssh` of the tree to a fresh directory (rsync_s), and, after the
  same one-file change, to the directory it already holds (rsync_resubmit_s).

Measured: first_sync_s (one cold run: empty store, node caches and hash cache),
resubmit_to_running_s (headline; median of --reps, each changing another small file) and
resubmit_bytes (blob bytes that re-submit uploaded), rsync_s (median of --reps full copies);
and, for reference, the same job with no working directory (no_workdir_to_running_s): what
submit -> running costs without any sync.
Targets (issue 14): re-submit uploads <= 1% of the tree and is <= 1 s to running; first
sync <= 1.5x rsync.

Run as root (sshd): `.venv/bin/python bench/workdir_sync.py [--mb 200] [--files 5000]`.
Installs rsync with apt-get when it is missing. Without root, sshd or rsync it prints a JSON
line with "skipped" and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.cluster import Cluster, free_port, wait_for  # noqa: E402

BENCH = "workdir_sync"
METRIC = "resubmit_to_running_s"
SEED = 14
BIG_FILES = 10
BIG_SHARE = 0.4
PER_DIR = 100
RUNNING_TIMEOUT_S = 180.0
HOUR_AGO_NS = (int(time.time()) - 3600) * 10**9


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=200, help="project size, MB (10^6 bytes)")
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--nodes", type=int, default=2, help="agents, each its own node cache")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--reps", type=int, default=3, help="re-submits and rsync copies")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args()


def skipped(why: str) -> int:
    print(json.dumps({"bench": BENCH, "metric": METRIC, "skipped": why}))
    return 0


def log(message: str) -> None:
    print(f"[{BENCH}] {message}", file=sys.stderr, flush=True)


# -- the project ------------------------------------------------------------------------------


def generate(root: Path, files: int, total: int) -> list[Path]:
    """The tree; returns its small files (the ones a re-submit changes)."""
    rng = random.Random(SEED)
    big_each = int(total * BIG_SHARE) // BIG_FILES
    small_n = files - BIG_FILES
    small_each = (total - big_each * BIG_FILES) // small_n
    small: list[Path] = []
    for i in range(files):
        d = root / f"pkg{i // PER_DIR:03d}"
        d.mkdir(parents=True, exist_ok=True)
        if i < BIG_FILES:
            path, size = d / f"weights{i}.bin", big_each
        else:
            path, size = d / f"mod{i}.py", small_each
            small.append(path)
        path.write_bytes(rng.randbytes(size))
        os.utime(path, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
    return small


def change(path: Path, n: int) -> None:
    """A one-file edit: same size, new bytes, a new mtime (as an editor leaves it)."""
    data = bytearray(path.read_bytes())
    data[: len(f"# edit {n}\n")] = f"# edit {n}\n".encode()
    path.write_bytes(bytes(data))


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# -- corral ----------------------------------------------------------------------------------


def job_spec(name: str, replicas: int, workdir: str | None) -> Any:
    from corral.spec import JobSpec

    return JobSpec(
        name=name,
        entrypoint=["sleep", "3600"],
        replicas=replicas,
        workdir=workdir,
        resources={"cpus": 0.1, "memory": "64Mi"},  # type: ignore[arg-type]
    )


ISOLATION = "user" if os.geteuid() == 0 else "none"


def floor(cluster: Cluster, name: str, replicas: int) -> float | None:
    """The same job without a working directory: submit to running, for reference."""
    with cluster.client() as client:
        t0 = time.perf_counter()
        client.submit_job(job_spec(name, replicas, None))
        error = wait_running(client, name, replicas)
        took = time.perf_counter() - t0
        client.cancel_job(name)
    return None if error else took


def submit(
    cluster: Cluster, project: Path, cache: Path, name: str, replicas: int
) -> dict[str, Any]:
    """Pack, upload, submit, wait for every replica to run: the timings and bytes."""
    from corral.client.artifacts import upload_tree
    from corral.client.workdir import pack_workdir

    with cluster.client() as client:
        t0 = time.perf_counter()
        tree = pack_workdir(project, cache_dir=cache)
        t_pack = time.perf_counter()
        uploaded = upload_tree(client, tree)
        t_upload = time.perf_counter()
        client.submit_job(job_spec(name, replicas, f"sha256:{uploaded.digest}"))
        error = wait_running(client, name, replicas)
        t_running = time.perf_counter()
        client.cancel_job(name)
    return {
        "pack_s": t_pack - t0,
        "upload_s": t_upload - t_pack,
        "to_running_s": None if error else t_running - t0,
        "uploaded_bytes": uploaded.uploaded_bytes,
        "read_bytes": tree.read_bytes,
        "tree_bytes": tree.total_bytes,
        "files": tree.files,
        "error": error,
    }


def wait_running(client: Any, name: str, replicas: int) -> str | None:
    """None once every replica runs; else why not (the job ended, or the time ran out)."""
    deadline = time.monotonic() + RUNNING_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get_job(name)
        running = [r for r in job.replicas if r.state == "running"]
        if len(running) == replicas:
            return None
        if job.state in ("succeeded", "failed", "cancelled"):
            return f"job {name} ended {job.state}: {job.reason}"
        time.sleep(0.01)
    return f"job {name} was not running after {RUNNING_TIMEOUT_S:.0f} s: {job.reason}"


# -- rsync over ssh ----------------------------------------------------------------------------


class Sshd:
    def __init__(self, root: Path) -> None:
        self.dir = root / "sshd"
        self.dir.mkdir()
        self.key = self.dir / "client_ed25519"
        host_key = self.dir / "host_ed25519"
        for key in (self.key, host_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                check=True,
                capture_output=True,
            )
        auth = self.dir / "authorized_keys"
        shutil.copy(self.key.with_name(self.key.name + ".pub"), auth)
        self.port = free_port()
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {auth}\nUsePAM no\nPidFile none\nStrictModes no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin yes\nUseDNS no\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        out = (self.dir / "sshd.log").open("ab")
        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        wait_for("sshd to listen", lambda: _port_open(self.port), timeout=10)

    def rsync(self, src: Path, dest: Path) -> float:
        ssh = (
            f"ssh -F /dev/null -p {self.port} -i {self.key} -o BatchMode=yes "
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o IdentitiesOnly=yes -o LogLevel=ERROR"
        )
        t0 = time.perf_counter()
        subprocess.run(
            ["rsync", "-a", "-e", ssh, f"{src}/", f"root@127.0.0.1:{dest}/"],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    project = root / "project"
    log(f"generating {args.mb} MB in {args.files} files")
    small = generate(project, args.files, args.mb * 1_000_000)
    total = tree_bytes(project)
    cache = root / "client-cache"
    sshd = Sshd(root)
    cluster = Cluster(root / "corral")
    (root / "corral").mkdir()
    try:
        log("rsync: full copies")
        rsync_full = [sshd.rsync(project, root / f"rsync-dest-{i}") for i in range(args.reps)]
        dest = root / f"rsync-dest-{args.reps - 1}"
        cluster.start_server()
        for i in range(args.nodes):
            # Confined where it can be (root), as a fleet's agents run: a confined replica's
            # files are links to the node's one copy (agent/workdir.py).
            cluster.agent(f"n{i}", isolation=ISOLATION)
        for i in range(args.nodes):
            cluster.wait_node_ready(f"n{i}")
        log("corral: first submit")
        first = submit(cluster, project, cache, "first", args.replicas)
        log(f"  {first}")
        resubmits, rsync_inc = [], []
        for rep in range(args.reps):
            change(small[rep * 37 % len(small)], rep)
            log(f"corral: re-submit {rep + 1} after one changed file")
            resubmits.append(submit(cluster, project, cache, f"again-{rep}", args.replicas))
            log(f"  {resubmits[-1]}")
            rsync_inc.append(sshd.rsync(project, dest))
        log("corral: the same job without a working directory")
        floors = [floor(cluster, f"bare-{rep}", args.replicas) for rep in range(args.reps)]
    finally:
        cluster.close()
        sshd.close()
    return {
        "total": total,
        "first": first,
        "resubmits": resubmits,
        "rsync_full": rsync_full,
        "rsync_inc": rsync_inc,
        "floors": floors,
    }


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if len(known) == len(values) and known else None


def report(args: argparse.Namespace, r: dict[str, Any]) -> dict[str, Any]:
    first, again = r["first"], r["resubmits"]
    value = _median([a["to_running_s"] for a in again])
    rsync_s = round(statistics.median(r["rsync_full"]), 3)
    rsync_inc = round(statistics.median(r["rsync_inc"]), 3)
    resubmit_bytes = int(statistics.median(a["uploaded_bytes"] for a in again))
    first_s = None if first["to_running_s"] is None else round(first["to_running_s"], 3)
    fraction = resubmit_bytes / r["total"]
    errors = [x["error"] for x in [first, *again] if x["error"]]
    meets = (
        value is not None
        and first_s is not None
        and fraction <= 0.01
        and value <= 1.0
        and first_s <= 1.5 * rsync_s
    )
    return {
        "bench": BENCH,
        "metric": METRIC,
        "value": value,
        "unit": "s",
        "higher_is_better": False,
        "baseline": "rsync_ssh_incremental",
        "baseline_value": rsync_inc,
        "ratio": None if value is None else round(value / rsync_inc, 3),
        "extra": {
            "resubmit_bytes": resubmit_bytes,
            "resubmit_fraction": round(fraction, 6),
            "first_sync_s": first_s,
            "rsync_s": rsync_s,
            "rsync_resubmit_s": rsync_inc,
            "first_sync_ratio": None if first_s is None else round(first_s / rsync_s, 3),
            "first_pack_s": round(first["pack_s"], 3),
            "first_upload_s": round(first["upload_s"], 3),
            "first_uploaded_bytes": first["uploaded_bytes"],
            "resubmit_pack_s": _median([a["pack_s"] for a in again]),
            "resubmit_upload_s": _median([a["upload_s"] for a in again]),
            "resubmit_read_bytes": int(statistics.median(a["read_bytes"] for a in again)),
            "resubmit_runs_s": [a["to_running_s"] for a in again],
            "rsync_runs_s": [round(x, 3) for x in r["rsync_full"]],
            "no_workdir_to_running_s": _median(r["floors"]),
            "errors": errors,
            "targets": {"resubmit_fraction": 0.01, "resubmit_s": 1.0, "first_sync_ratio": 1.5},
            "meets_targets": meets,
        },
        "conditions": {
            "tree_bytes": r["total"],
            "files": first["files"],
            "big_files": BIG_FILES,
            "seed": SEED,
            "nodes": args.nodes,
            "replicas": args.replicas,
            "reps": args.reps,
            "first_sync_reps": 1,
            "driven_by": "SDK in-process (client/workdir.py, client/artifacts.py)",
            "isolation": ISOLATION,
            "rsync": _version(["rsync", "--version"]),
            "openssh": _version(["ssh", "-V"]),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
    }


def _version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0].strip()


def _ensure_rsync() -> bool:
    if shutil.which("rsync"):
        return True
    if shutil.which("apt-get"):
        log("installing rsync (apt-get)")
        subprocess.run(["apt-get", "install", "-y", "-qq", "rsync"], capture_output=True)
    return shutil.which("rsync") is not None


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        return skipped("needs root: an sshd of its own for the rsync baseline")
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return skipped(f"{tool} (openssh-client) is not installed")
    if not os.access("/usr/sbin/sshd", os.X_OK):
        return skipped("/usr/sbin/sshd (openssh-server) is not installed")
    if not _ensure_rsync():
        return skipped("rsync is not installed and could not be")
    if args.files <= BIG_FILES or args.reps < 1 or args.mb < 1:
        raise SystemExit(f"--files > {BIG_FILES}, --reps >= 1, --mb >= 1")
    root = Path(tempfile.mkdtemp(prefix=f"corral-{BENCH}-"))
    try:
        r = run(args, root)
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report(args, r)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
