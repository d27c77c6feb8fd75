"""Jobs end to end: a real server, real agents, real processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from corral.spec import parse_job_spec
from support.cluster import Cluster, wait_for

SMALL = {"cpus": 0.1, "memory": "64Mi"}


def submit(cluster: Cluster, spec: dict[str, object]):  # type: ignore[no-untyped-def]
    with cluster.client() as client:
        return client.submit_job(parse_job_spec({"resources": SMALL, **spec}))


def job(cluster: Cluster, name: str):  # type: ignore[no-untyped-def]
    with cluster.client() as client:
        return client.get_job(name)


def wait_state(cluster: Cluster, name: str, *states: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    return wait_for(
        f"job {name} to be {'/'.join(states)}",
        lambda: (j := job(cluster, name)).state in states and j,
        timeout=timeout,
    )


def logs(cluster: Cluster, name: str, replica: int = 0) -> str:
    with cluster.client() as client:
        return client.job_logs(name, replica=replica).data


def test_a_job_runs_and_its_logs_are_readable_while_it_runs_and_after(
    one_node: Cluster, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    submit(
        one_node,
        {
            "name": "hello",
            "command": f"echo started; while [ ! -e {go} ]; do sleep 0.05; done; echo finished",
        },
    )
    wait_state(one_node, "hello", "running")
    wait_for("the log while running", lambda: "started" in logs(one_node, "hello"))
    go.touch()
    done = wait_state(one_node, "hello", "succeeded", "failed")
    assert (done.state, done.exit_code) == ("succeeded", 0)
    wait_for("the whole log", lambda: logs(one_node, "hello") == "started\nfinished\n")
    assert done.started_at is not None and done.finished_at is not None


def test_a_failing_job_ends_failed_with_its_exit_code_and_log_tail(one_node: Cluster) -> None:
    submit(
        one_node, {"name": "boom", "command": "echo step 1; echo 'ValueError: bad lr' >&2; exit 3"}
    )
    done = wait_state(one_node, "boom", "succeeded", "failed")
    assert (done.state, done.exit_code) == ("failed", 3)
    assert "exited with code 3" in done.reason
    tail = wait_for("the log tail", lambda: job(one_node, "boom").log_tail)
    assert tail[-1] == "ValueError: bad lr"


def test_a_gang_gets_the_torch_distributed_environment(cluster: Cluster) -> None:
    cluster.agent("node-a")
    cluster.agent("node-b")
    cluster.wait_node_ready("node-a")
    cluster.wait_node_ready("node-b")
    # cpus 0.6 each on 2-CPU agents... keep it placeable on any machine: 2 replicas x 0.1.
    show = "echo $NODE_RANK $NNODES $WORLD_SIZE $MASTER_ADDR $MASTER_PORT $RANK"
    submit(cluster, {"name": "gang", "command": show, "replicas": 2})
    done = wait_state(cluster, "gang", "succeeded", "failed")
    assert done.state == "succeeded"
    assert [r.rank for r in done.replicas] == [0, 1]
    lines = [
        wait_for(f"replica {r} log", lambda r=r: logs(cluster, "gang", r)).split() for r in (0, 1)
    ]
    port = lines[0][4]
    assert lines[0] == ["0", "2", "2", "127.0.0.1", port, "0"]
    assert lines[1] == ["1", "2", "2", "127.0.0.1", port, "1"]


def test_a_gang_that_cannot_fit_starts_no_replica_and_says_why(one_node: Cluster) -> None:
    submit(
        one_node,
        {
            "name": "toobig",
            "command": "true",
            "replicas": 2,
            "resources": {**SMALL, "gpus": "H100:3"},
        },
    )
    pending = wait_for(
        "a pending reason",
        lambda: (j := job(one_node, "toobig")).reason and "needs 2× 3 H100" in j.reason and j,
    )
    assert pending.state == "pending" and pending.replicas == []
    assert "holds 1 such replica even when empty" in pending.reason  # not "1 such replicas"


def test_fake_gpus_are_assigned_through_cuda_visible_devices(one_node: Cluster) -> None:
    submit(
        one_node,
        {
            "name": "gpu",
            "command": "echo $CUDA_VISIBLE_DEVICES",
            "resources": {**SMALL, "gpus": "H100:2"},
        },
    )
    done = wait_state(one_node, "gpu", "succeeded", "failed")
    assert done.state == "succeeded" and done.replicas[0].gpus == [0, 1]
    assert wait_for("log", lambda: logs(one_node, "gpu")) == "0,1\n"


def test_cancel_kills_the_whole_process_group(one_node: Cluster, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    submit(
        one_node,
        {
            "name": "tree",
            "command": f"sleep 1000 & echo $! >> {pids}; "
            f"sh -c 'echo $$ >> {pids}; sleep 1000' & echo $$ >> {pids}; wait",
        },
    )
    wait_state(one_node, "tree", "running")
    found = wait_for("three pids", lambda: len(p := pids.read_text().split()) == 3 and p)
    procs = [psutil.Process(int(p)) for p in found]
    with one_node.client() as client:
        client.cancel_job("tree")
    _gone, alive = psutil.wait_procs(procs, timeout=10)
    assert alive == []
    assert wait_state(one_node, "tree", "cancelled").replicas[0].state == "stopped"


def test_an_agent_restart_leaves_the_replica_running_and_adopts_it(
    one_node: Cluster, tmp_path: Path
) -> None:
    starts, go = tmp_path / "starts", tmp_path / "go"
    submit(
        one_node,
        {
            "name": "survivor",
            "command": f"echo x >> {starts}; while [ ! -e {go} ]; do sleep 0.05; done; echo done",
        },
    )
    running = wait_state(one_node, "survivor", "running")
    pid = running.replicas[0].pid
    assert pid is not None and psutil.pid_exists(pid)
    agent = one_node.agents["node-a"]
    assert agent.stop(signal.SIGTERM) == 0
    assert psutil.pid_exists(pid)
    agent.start()
    one_node.wait_node_ready("node-a")
    go.touch()
    done = wait_state(one_node, "survivor", "succeeded", "failed")
    assert done.state == "succeeded"
    assert starts.read_text() == "x\n"  # started once, never again
    wait_for("the log after re-adoption", lambda: logs(one_node, "survivor") == "done\n")


def test_an_exit_while_the_agent_was_down_is_reported(one_node: Cluster, tmp_path: Path) -> None:
    go = tmp_path / "go"
    submit(
        one_node, {"name": "quiet", "command": f"while [ ! -e {go} ]; do sleep 0.05; done; exit 7"}
    )
    wait_state(one_node, "quiet", "running")
    agent = one_node.agents["node-a"]
    agent.kill9()
    go.touch()
    shim_done = wait_for(
        "the replica's exit",
        lambda: list((one_node.root / "agents" / "node-a").glob("replicas/*/exit.json")),
    )
    assert shim_done
    agent.start()
    done = wait_state(one_node, "quiet", "succeeded", "failed")
    assert (done.state, done.exit_code) == ("failed", 7)


def test_server_sigkill_loses_and_duplicates_nothing(one_node: Cluster, tmp_path: Path) -> None:
    go = tmp_path / "go"
    names = [f"k{i}" for i in range(4)]
    for name in names:
        submit(
            one_node,
            {
                "name": name,
                "command": f"echo {name} >> {tmp_path / name}; "
                f"while [ ! -e {go} ]; do sleep 0.05; done",
            },
        )
    for name in names:
        wait_state(one_node, name, "running")
    one_node.server.kill9()
    go.touch()  # they finish while the server is away
    one_node.server.start()
    wait_for("/healthz", lambda: one_node.client().health())
    for name in names:
        assert wait_state(one_node, name, "succeeded", "failed").state == "succeeded"
        assert (tmp_path / name).read_text() == f"{name}\n"
    with one_node.client() as client:
        assert sorted(j.name for j in client.list_jobs()) == names
        assert all(j.attempt == 1 for j in client.list_jobs())


def test_a_job_submitted_while_the_agent_is_away_runs_when_it_returns(one_node: Cluster) -> None:
    agent = one_node.agents["node-a"]
    agent.stop()
    submit(one_node, {"name": "later", "command": "echo ok"})
    assert job(one_node, "later").state == "pending"
    agent.start()
    assert wait_state(one_node, "later", "succeeded", "failed").state == "succeeded"


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_a_workspace_cannot_see_or_touch_another(cluster: Cluster, role: str) -> None:
    from corral.client.errors import ApiError

    with cluster.client() as admin:
        admin.create_workspace("team-a")
        admin.create_workspace("team-b")
        token_a = admin.create_token(role=role, workspace="team-a").token
        token_b = admin.create_token(role="member", workspace="team-b").token
    assert token_a and token_b
    with cluster.client(token_b, "team-b") as b:
        b.submit_job(parse_job_spec({"name": "secret", "command": "true", "resources": SMALL}))
    with cluster.client(token_a, "team-b") as a_in_b:
        for call in (
            a_in_b.list_jobs,
            lambda: a_in_b.get_job("secret"),
            lambda: a_in_b.cancel_job("secret"),
        ):
            with pytest.raises(ApiError) as err:
                call()
            assert err.value.status == 403
    with cluster.client(token_a, "team-a") as a:
        assert a.list_jobs() == []
        with pytest.raises(ApiError) as err:
            a.get_job("secret")
        assert err.value.status == 404
        if role == "viewer":
            with pytest.raises(ApiError) as err:
                a.submit_job(parse_job_spec({"command": "true"}))
            assert err.value.status == 403
    assert os.environ.get("CORRAL_TOKEN") != token_a  # the tests never leak into the env
