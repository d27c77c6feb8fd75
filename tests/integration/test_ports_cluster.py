"""Ports asked of the host, end to end: a real server, a real agent, a job that binds its
MASTER_PORT as torch.distributed's rank 0 does, and a process that is not corral's holding
the port corral would otherwise hand out (issue 10: `corral job run examples/ddp.yaml`
failed every attempt with EADDRINUSE, each charged as "an error in the script")."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from corral.agent import ports
from corral.core.placement import FIRST_MASTER_PORT
from corral.spec import parse_job_spec
from support.cluster import Cluster, wait_for

SMALL = {"cpus": 0.1, "memory": "64Mi"}

# Rank 0 of a DDP job, as far as ports go: it says its MASTER_PORT, waits for the test's
# go-ahead, and listens there (a bind that fails ends it with a traceback, exit 1). Both
# scripts set SO_REUSEADDR as real servers do: without it a port an earlier test used is
# unusable for a minute (TIME_WAIT), though nothing listens there.
RANK0 = """\
import os, pathlib, socket, sys, time
port = int(os.environ["MASTER_PORT"])
print("port", port, flush=True)
while not pathlib.Path(sys.argv[1]).exists():
    time.sleep(0.02)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's TCPStore does
s.bind(("0.0.0.0", port))
s.listen()
print("bound", port, flush=True)
"""

# Another program on the node: once `claim` holds a port number, it listens there; with
# "first" it takes the first free port from FIRST_MASTER_PORT at once and says which.
FOREIGN = """\
import pathlib, socket, sys, time
claim = sys.argv[1]
s = socket.socket()
# Like every server (http.server, uvicorn): a port whose last connections are in TIME_WAIT
# (an earlier test's) is free to listen on; one another process listens on is not.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if claim == "first":
    port = int(sys.argv[2])
    while True:
        try:
            s.bind(("0.0.0.0", port))
            break
        except OSError:
            port += 1
else:
    while not pathlib.Path(claim).exists() or not pathlib.Path(claim).read_text().strip():
        time.sleep(0.02)
    port = int(pathlib.Path(claim).read_text())
    s.bind(("0.0.0.0", port))
s.listen()
print(port, flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def foreign(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FOREIGN, *args],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def submit(cluster: Cluster, spec: dict[str, object]) -> None:
    with cluster.client() as client:
        client.submit_job(parse_job_spec({"resources": SMALL, **spec}))


def job(cluster: Cluster, name: str):  # type: ignore[no-untyped-def]
    with cluster.client() as client:
        return client.get_job(name)


def log(cluster: Cluster, name: str, attempt: int) -> str:
    with cluster.client() as client:
        return client.job_logs(name, attempt=attempt).data


def said(cluster: Cluster, name: str, attempt: int, word: str) -> int | None:
    """The number after `word` in the attempt's log, once it is there."""
    for line in log(cluster, name, attempt).splitlines():
        if line.startswith(f"{word} "):
            return int(line.split()[1])
    return None


def finished(cluster: Cluster, name: str):  # type: ignore[no-untyped-def]
    return wait_for(
        f"job {name} to finish",
        lambda: (j := job(cluster, name)).state in ("succeeded", "failed") and j,
        timeout=60,
    )


def test_a_port_taken_before_the_node_joined_is_never_handed_out(
    cluster: Cluster, tmp_path: Path
) -> None:
    script, go = tmp_path / "rank0.py", tmp_path / "go"
    script.write_text(RANK0)
    go.touch()
    with foreign("first", str(FIRST_MASTER_PORT)) as stranger:
        assert stranger.stdout is not None
        taken = int(stranger.stdout.readline())  # the port the scheduler would pick first
        cluster.agent("node-a")
        cluster.wait_node_ready("node-a")  # its hello said which ports are in use
        submit(cluster, {"name": "ddp", "command": f"{sys.executable} {script} {go}"})
        done = finished(cluster, "ddp")
        assert (done.state, done.restarts, len(done.attempts)) == ("succeeded", 0, 1), done
        got = wait_for("the port it bound", lambda: said(cluster, "ddp", 1, "bound"))
        assert got != taken and got >= FIRST_MASTER_PORT


def test_a_port_taken_after_placement_is_the_infrastructures_failure_not_the_scripts(
    cluster: Cluster, tmp_path: Path
) -> None:
    script, go, claim = tmp_path / "rank0.py", tmp_path / "go", tmp_path / "claim"
    script.write_text(RANK0)
    cluster.agent("node-a")
    cluster.wait_node_ready("node-a")
    # Running before the job starts, it takes the job's port only once the job has it: the
    # window between the node's report of its ports and the workload's own bind.
    with foreign(str(claim)) as stranger:
        submit(
            cluster,
            {"name": "ddp", "command": f"{sys.executable} {script} {go}", "max_restarts": 0},
        )
        first = wait_for("attempt 1's port", lambda: said(cluster, "ddp", 1, "port"))
        claim.write_text(str(first))
        deadline = time.monotonic() + 10
        while not ports.on_port(first):
            assert time.monotonic() < deadline, "the stranger never listened"
            time.sleep(0.02)
        go.touch()  # rank 0 binds now: EADDRINUSE
        done = finished(cluster, "ddp")
        assert stranger.poll() is None
    assert (done.state, done.restarts) == ("succeeded", 0), done
    one, _ = done.attempts
    assert one.end_cause == "port_in_use", one
    assert "not charged to max_restarts" in (one.reason or "")
    assert "Address already in use" in log(cluster, "ddp", 1)
    second = wait_for("attempt 2's port", lambda: said(cluster, "ddp", 2, "bound"))
    assert second != first
