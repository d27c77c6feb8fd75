"""Training that survives losing a host, a hang and its own bug: examples/ddp.py as a real
two-replica DDP gang (gloo) across network-namespace hosts, under a real control plane and
one real agent per host, with a third host spare.

```
 server (root namespace, on hosts.gateway) ── checkpoints: one directory all hosts see
    │ agent channel
 h0: agent ─ rank 0      h1: agent ─ rank 1      h2: agent (spare)
```

- a host dies (its agent, shims and workloads killed at once) or is cut off (its link goes
  down; everything on it keeps running): the node is `lost` within the bound, the attempt
  ends `node_lost`, the survivor is stopped, the gang runs again on the healthy hosts
  (spare included) from the newest checkpoint and finishes.
- a rank hangs (alive, no new step for `progress_timeout`): the attempt ends `hang`, the
  next one resumes and finishes.
- the script raises: `user_error`, retried `max_restarts` times and no more; `corral job
  get` shows the traceback.

Each host has one (fake) GPU and each replica asks for one, so a gang of two spans two
hosts. Without network namespaces (not root) the hosts are loopback addresses and a cut is
a freeze (see support.netns); the test runs the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from corral.spec.job import JobSpec
from corral.spec.loader import load_job_spec
from corral.wire.api import JobView, ReplicaView
from support.cluster import wait_for
from support.multihost import HostCluster
from support.netns import make_hosts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp.yaml"
STEPS = 30
EVERY = 10  # checkpoint interval, steps
STEP_TIME = 0.2  # seconds a step sleeps: the kill lands between two checkpoints
LOST_AFTER = 4.0  # CORRAL_NODE_LOST_AFTER for these tests (the server's default is 8 s)
HANG_TIMEOUT = 10.0  # progress_timeout: must outlast a replica's start-up (torch import)
# A node is lost LOST_AFTER after its last heartbeat, found by the liveness check (every
# LOST_AFTER / 5 s); the rest is this test's polling and a loaded 2-core machine.
DETECT_BOUND = LOST_AFTER + 3.0


@pytest.fixture
def hc(tmp_path: Path) -> Iterator[HostCluster]:
    hosts = make_hosts(3)
    cluster = HostCluster(hosts, tmp_path, lost_after=LOST_AFTER, heartbeat=0.5)
    try:
        cluster.start()
        yield cluster
    finally:
        print(cluster.logs())  # pytest shows a teardown's output only when the test failed
        cluster.close()


def ddp_job(hc: HostCluster, name: str, *args: str, **fields: object) -> JobSpec:
    """examples/ddp.yaml, shorter and slower per step, with `args` added to its command."""
    data = load_job_spec(EXAMPLE).model_dump(mode="json", exclude_none=True)
    command = (
        f"exec python3 ddp.py --steps {STEPS} --checkpoint-every {EVERY} "
        f"--step-time {STEP_TIME} --timeout 60 {' '.join(args)}"
    )
    data.update(name=name, command=command, **fields)
    data["resources"]["gpus"] = 1  # one per host: a gang of two spans two hosts
    # Every namespace shares the machine's hostname, so gloo would bind 127.0.0.1 on its
    # own: the agent sets GLOO_SOCKET_IFNAME from the node's address (not set here).
    return JobSpec.model_validate(data)


def get(hc: HostCluster, name: str) -> JobView:
    with hc.client() as client:
        job: JobView = client.get_job(name)
        return job


def wait_job(hc: HostCluster, name: str, what: str, ok: Callable[[JobView], bool], timeout: float):
    """The job's view once `ok` holds for it."""
    return wait_for(
        f"job {name}: {what}",
        lambda: job if ok(job := get(hc, name)) else None,
        timeout=timeout,
    )


def running_attempt(attempt: int) -> Callable[[JobView], bool]:
    return lambda j: (
        j.attempt == attempt
        and j.state == "running"
        and all(r.state == "running" and r.pid for r in j.replicas)
    )


def finished(j: JobView) -> bool:
    return j.state in ("succeeded", "failed", "cancelled")


def rank(job: JobView, n: int) -> ReplicaView:
    return next(r for r in job.replicas if r.rank == n)


def gone(pid: int | None) -> bool:
    assert pid is not None
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def newest_checkpoint(directory: Path) -> int:
    return max((int(p.name[5:13]) for p in directory.glob("step-*.pt")), default=0)


@pytest.mark.parametrize("failure", ["kill", "cut"])
def test_a_gang_outlives_a_dead_host_and_resumes_from_its_newest_checkpoint(
    hc: HostCluster, failure: str
) -> None:
    with hc.client() as client:
        client.submit_job(ddp_job(hc, "train"))
    first = wait_job(hc, "train", "attempt 1 running", running_attempt(1), timeout=60)
    assert len({r.node for r in first.replicas}) == 2, "a gang of two spans two hosts"
    (spare,) = {h.name for h in hc.hosts} - {r.node for r in first.replicas}

    # A dead host takes rank 0 (the gang's MASTER_ADDR moves); a cut one takes rank 1.
    victim = rank(first, 0 if failure == "kill" else 1)
    survivor = rank(first, 1 if failure == "kill" else 0)
    # Just past the first checkpoint, as the script itself says (the server hears of steps
    # up to a progress poll, 1 s, later): it may not have heard of that checkpoint yet, and
    # it must resume from it all the same.
    victim_host = hc.host(victim.node)
    wait_for(
        "the victim a step past the first checkpoint",
        lambda: (hc.progress(victim_host, victim.id).get("step") or 0) > EVERY,
        timeout=60,
        interval=0.01,
    )
    checkpoints = hc.checkpoints / "default" / "train"
    failed_at = time.monotonic()
    if failure == "kill":
        victim_host.kill()
    else:
        victim_host.link_down()
    newest = newest_checkpoint(checkpoints)
    assert newest == EVERY, "the kill landed between the first and second checkpoint"

    def victim_lost() -> bool:
        with hc.client() as client:
            return any(n.name == victim.node and n.condition == "lost" for n in client.list_nodes())

    wait_for(f"node {victim.node} to be lost", victim_lost, timeout=DETECT_BOUND + 5)
    detect_s = time.monotonic() - failed_at
    assert detect_s <= DETECT_BOUND, f"lost after {detect_s:.1f}s"

    # The survivor is stopped: it ended (by itself on a reset connection after a kill;
    # by corral's SIGTERM after a cut, where gloo alone would wait for its 60 s timeout).
    survivor_host = hc.host(survivor.node)
    ended = wait_for("the survivor's exit", lambda: hc.replica_exit(survivor_host, survivor.id))
    assert gone(survivor.pid)
    if failure == "cut":
        assert ended["exit_code"] == 143, ended  # 128 + SIGTERM: stopped by corral

    second = wait_job(hc, "train", "attempt 2 running", running_attempt(2), timeout=60)
    assert {r.node for r in second.replicas} == {survivor.node, spare}, "not on the lost host"
    one = second.attempts[0]
    assert one.end_cause == "node_lost", one
    assert f"node {victim.node} lost" in (one.reason or ""), one

    done = wait_job(hc, "train", "to finish", finished, timeout=90)
    assert done.state == "succeeded", done.reason
    a1, a2 = done.attempts
    assert (a1.end_cause, a2.end_cause) == ("node_lost", None)
    assert a2.start_step == newest > 0, done.attempts
    assert a1.checkpoint_step in (None, newest), done.attempts
    rank0 = rank(done, 0)
    output = hc.replica_output(hc.host(rank0.node), rank0.id)
    assert f"resuming from step {a2.start_step}" in output, output
    assert done.step == STEPS and a2.step == STEPS
    final = json.loads((checkpoints / "final.json").read_text())
    assert (final["step"], final["world_size"]) == (STEPS, 2)
    assert done.goodput is not None and done.goodput.lost_by_cause.get("node_lost", 0) > 0
    assert 0 < done.goodput.ettr < 1
    with hc.client() as client:
        nodes = {n.name: n.condition for n in client.list_nodes()}
    assert nodes[victim.node] == "lost" and nodes[survivor.node] == nodes[spare] == "ready"


def test_a_hung_rank_ends_the_attempt_and_the_next_one_finishes(hc: HostCluster) -> None:
    # Rank 1 sleeps forever at step 15, once per checkpoint directory: only attempt 1 hangs.
    spec = ddp_job(hc, "hang", "--hang-at-step", "15", "--hang-rank", "1")
    spec = spec.model_copy(update={"progress_timeout": HANG_TIMEOUT})
    with hc.client() as client:
        client.submit_job(spec)
    marker = hc.checkpoints / "default" / "hang" / "hang-at-15.done"
    wait_for("rank 1 to hang", marker.exists, timeout=60)
    hung_at = time.monotonic()
    hung = get(hc, "hang")
    assert hung.attempt == 1
    ranks = {r.rank: r for r in hung.replicas}
    assert not gone(ranks[1].pid), "the hung rank lives: only its progress stops"

    second = wait_job(hc, "hang", "attempt 2", lambda j: j.attempt >= 2, timeout=HANG_TIMEOUT + 30)
    noticed_s = time.monotonic() - hung_at
    one = second.attempts[0]
    assert one.end_cause == "hang", one
    assert f"no new step for {HANG_TIMEOUT:g}s" in (one.reason or ""), one
    # Its last step was reported just before it hung (the agent polls every second).
    assert HANG_TIMEOUT - 2 <= noticed_s <= HANG_TIMEOUT + 5, noticed_s
    for r in hung.replicas:  # both stopped: the hung one, and its peer stuck waiting on it
        wait_for(f"rank {r.rank} of attempt 1 to be stopped", lambda r=r: gone(r.pid))

    done = wait_job(hc, "hang", "to finish", finished, timeout=60)
    assert done.state == "succeeded", done.reason
    a1, a2 = done.attempts
    assert a1.step == 14 and a1.checkpoint_step == EVERY
    assert a2.start_step == EVERY and done.step == STEPS
    assert done.goodput is not None and done.goodput.lost_by_cause.get("hang", 0) > 0


def test_a_script_error_is_retried_max_restarts_times_then_fails_with_its_traceback(
    hc: HostCluster,
) -> None:
    with hc.client() as client:
        client.submit_job(ddp_job(hc, "buggy", "--fail-at-step", "5", max_restarts=1))
    done = wait_job(hc, "buggy", "to finish", finished, timeout=90)
    assert done.state == "failed", done.reason
    assert [a.end_cause for a in done.attempts] == ["user_error", "user_error"]
    # One restart (max_restarts: 1) was spent; the second failure ended the job.
    assert done.attempt == 2 and done.restarts == 1
    assert "no restarts left (max_restarts: 1)" in (done.reason or ""), done.reason
    assert done.exit_code == 1
    assert all(a.step == 4 and a.start_step == 0 for a in done.attempts)
    assert done.goodput is not None and "user_error" in done.goodput.lost_by_cause
    assert not any(c in done.goodput.lost_by_cause for c in ("node_lost", "hang"))

    cli = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "job", "get", "buggy"],
        env={**hc.env, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    assert "Traceback (most recent call last)" in cli.stdout, cli.stdout
    assert "RuntimeError: injected failure at step 5" in cli.stdout, cli.stdout
    assert "user error" in cli.stdout, cli.stdout
    assert "restarts: 1 of 1 allowed" in cli.stdout, cli.stdout


def test_the_example_yaml_sets_what_recovery_needs() -> None:
    spec = load_job_spec(EXAMPLE)
    assert spec.replicas == 2 and spec.max_restarts >= 1
    assert spec.progress_timeout is not None and spec.progress_timeout >= 60
