"""The scheduler through the server: preemption, quotas and topology with real agents."""

from __future__ import annotations

from corral.spec import parse_job_spec
from support.cluster import Cluster, wait_for

SMALL = {"cpus": 0.1, "memory": "64Mi"}


def submit(cluster: Cluster, spec: dict[str, object], workspace: str = "default"):  # type: ignore[no-untyped-def]
    with cluster.client(workspace=workspace) as client:
        return client.submit_job(parse_job_spec({"resources": SMALL, **spec}))


def job(cluster: Cluster, name: str, workspace: str = "default"):  # type: ignore[no-untyped-def]
    with cluster.client(workspace=workspace) as client:
        return client.get_job(name)


def wait_job(cluster: Cluster, name: str, check, what: str, workspace: str = "default"):  # type: ignore[no-untyped-def]
    return wait_for(what, lambda: (j := job(cluster, name, workspace)) and check(j) and j)


def test_a_higher_priority_job_preempts_a_preemptible_one_which_then_runs_again(
    one_node: Cluster,
) -> None:
    submit(
        one_node,
        {
            "name": "sweep",
            "command": "sleep 300",
            "priority": "batch",
            "preemptible": True,
            "resources": {**SMALL, "gpus": "H100:4"},
        },
    )
    first = wait_job(one_node, "sweep", lambda j: j.state == "running", "sweep to run")
    victim_gpus = first.replicas[0].gpus
    submit(
        one_node,
        {
            "name": "urgent",
            "command": "echo urgent on $CUDA_VISIBLE_DEVICES",
            "priority": "train",
            "resources": {**SMALL, "gpus": "H100:4"},
        },
    )
    done = wait_job(one_node, "urgent", lambda j: j.state == "succeeded", "urgent to succeed")
    assert sorted(done.replicas[0].gpus) == sorted(victim_gpus)
    # The victim was stopped (not failed), counted, and placed again once the GPUs freed.
    again = wait_job(
        one_node, "sweep", lambda j: j.state == "running" and j.attempt == 2, "sweep to rerun"
    )
    assert again.preemptions == 1 and again.restarts == 0
    with one_node.client() as client:
        first_attempt = client.job_logs("sweep", attempt=1)
    assert first_attempt.complete


def test_a_lower_priority_job_never_preempts_and_says_why(one_node: Cluster) -> None:
    submit(
        one_node,
        {
            "name": "serving",
            "command": "sleep 300",
            "priority": "endpoint",
            "preemptible": True,
            "resources": {**SMALL, "gpus": "H100:4"},
        },
    )
    wait_job(one_node, "serving", lambda j: j.state == "running", "serving to run")
    submit(
        one_node,
        {"name": "late", "command": "true", "priority": "batch", "resources": {**SMALL, "gpus": 2}},
    )
    pending = wait_job(
        one_node, "late", lambda j: j.reason and "free" in j.reason, "a pending reason for late"
    )
    assert pending.state == "pending"
    assert job(one_node, "serving").preemptions == 0


def test_quota_is_set_shown_and_guards_admin_only(one_node: Cluster) -> None:
    with one_node.client() as admin:
        admin.create_workspace("team-a")
        member_token = admin.create_token(role="member", workspace="team-a").token
        quota = admin.set_quota("team-a", {"h100": 2})
    assert quota.guaranteed == {"H100": 2} and quota.used == {}
    submit(
        one_node,
        {"name": "mine", "command": "sleep 300", "resources": {**SMALL, "gpus": "H100:1"}},
        workspace="team-a",
    )
    wait_job(one_node, "mine", lambda j: j.state == "running", "mine to run", "team-a")
    with one_node.client(token=member_token, workspace="team-a") as member:
        seen = member.list_quotas()
        assert [(q.workspace, q.guaranteed, q.used) for q in seen] == [
            ("team-a", {"H100": 2}, {"H100": 1})
        ]
        try:
            member.set_quota("team-a", {"H100": 4})
        except Exception as exc:
            assert "cluster admin" in str(exc)
        else:
            raise AssertionError("a member set a quota")


def test_node_labels_are_topology_and_a_gang_that_must_share_a_rack_waits(
    cluster: Cluster,
) -> None:
    for name, rack in (("n1", "r1"), ("n2", "r2")):
        cluster.agent(name, "--fake-gpus", "H100:2", "--label", f"rack={rack}", "--label", "zone=z")
        cluster.wait_node_ready(name)
    spec = {"command": "true", "replicas": 2, "resources": {**SMALL, "gpus": "H100:2"}}
    submit(cluster, {**spec, "name": "in-rack", "topology": "rack"})
    pending = wait_job(
        cluster, "in-rack", lambda j: j.reason and "rack" in j.reason, "in-rack's pending reason"
    )
    assert pending.state == "pending", pending.reason
    submit(cluster, {**spec, "name": "in-zone", "topology": "zone"})
    done = wait_job(cluster, "in-zone", lambda j: j.state == "succeeded", "in-zone to succeed")
    assert {r.node for r in done.replicas} == {"n1", "n2"}
    submit(cluster, {**spec, "name": "picky", "replicas": 1, "node_selector": {"rack": "r2"}})
    picked = wait_job(cluster, "picky", lambda j: j.state == "succeeded", "picky to succeed")
    assert picked.replicas[0].node == "n2"


def test_a_job_past_its_max_runtime_is_stopped_and_fails_saying_so(one_node: Cluster) -> None:
    submit(one_node, {"name": "slow", "command": "sleep 300", "max_runtime": 1})
    ended = wait_job(one_node, "slow", lambda j: j.state == "failed", "slow to be stopped")
    assert "max_runtime" in (ended.reason or "")
    stopped = wait_job(
        one_node,
        "slow",
        lambda j: j.replicas and j.replicas[0].state == "stopped",
        "slow's replica to stop",
    )
    assert stopped.replicas[0].exit_code != 0
