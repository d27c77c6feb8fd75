"""A workload cannot reach the platform's secrets or another workspace's work on its node.

End to end: a real server and a confined agent (root, as on a real node), two workspaces,
and jobs that try what a hostile tenant would: read every process's environment, the
control plane's config and database, the agent's node token, another workspace's replica
record (with its env secrets) and checkpoints, see or signal its processes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.client import Client
from corral.spec.job import JobSpec
from support.cluster import ADMIN_TOKEN, JOIN_TOKEN, Cluster, wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="confinement uses Linux namespaces")

TEAM_B_SECRET = "b-secret-5f1e9c"
OPERATOR_SECRET = "hf_operator_3c9d1e"
# What the hostile job reports, as one JSON line: every probe's outcome.
PROBE = r"""
import glob, json, os, signal
report = {"uid": os.getuid(), "pids": [], "env_tokens": [], "reads": {}, "writes": {},
          "agent_env": sorted(k for k in os.environ if k.startswith("CORRAL_") or k == "HF_TOKEN")}
for d in glob.glob("/proc/[0-9]*"):
    report["pids"].append(int(d.rsplit("/", 1)[1]))
    if int(d.rsplit("/", 1)[1]) == os.getpid():
        continue  # this probe's own source and environment name the markers
    try:
        data = open(d + "/environ", "rb").read() + open(d + "/cmdline", "rb").read()
    except OSError:
        continue
    for marker in (b"crl_", b"crj_", b"crn_", os.environ["SECRET"].encode()):
        if marker in data:
            report["env_tokens"].append(d)
for name, path in json.loads(os.environ["TARGETS"]).items():
    try:
        with open(path, "rb") as f:
            f.read(1)
        report["reads"][name] = "read"
    except OSError as e:
        report["reads"][name] = type(e).__name__
for name, path in json.loads(os.environ["WRITES"]).items():
    try:
        with open(path, "w") as f:
            f.write("owned")
        report["writes"][name] = "written"
    except OSError as e:
        report["writes"][name] = type(e).__name__
try:
    os.kill(int(os.environ["VICTIM_PID"]), signal.SIGKILL)
    report["kill"] = "killed"
except OSError as e:
    report["kill"] = type(e).__name__
print("REPORT " + json.dumps(report))
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("these tests need root: confinement is what a root agent does")
    c = Cluster(tmp_path)
    try:
        c.start_server()
        # An operator's credential in the agent's environment: for the agent, not tenants.
        c.env["HF_TOKEN"] = OPERATOR_SECRET
        c.agent("node-1", "--fake-gpus", "H100:2", isolation="user")
        c.wait_node_ready("node-1")
        yield c
    finally:
        c.close()


def team_client(cluster: Cluster, admin: Client, workspace: str) -> Client:
    admin.create_workspace(workspace)
    token = admin.create_token(role="member", workspace=workspace).token
    assert token is not None
    return Client(cluster.url, token, workspace)


def log_of(client: Client, name: str) -> str:
    wait_for(f"{name}'s whole log", lambda: client.job_logs(name).complete)
    return client.job_logs(name).data


def report_of(client: Client, name: str) -> dict[str, object]:
    view = client.wait_job(name, timeout=60)
    text = log_of(client, name)
    assert view.state == "succeeded", text
    line = next(x for x in text.splitlines() if x.startswith("REPORT "))
    return json.loads(line.removeprefix("REPORT "))  # type: ignore[no-any-return]


def test_a_workload_reads_no_platform_secret_and_nothing_of_another_workspace(
    cluster: Cluster, tmp_path: Path
) -> None:
    with cluster.client() as admin:
        a = team_client(cluster, admin, "team-a")
        b = team_client(cluster, admin, "team-b")
    with a, b:
        # team-b: a long job holding a secret in its env, with a checkpoint.
        b.submit_job(
            JobSpec(
                name="victim",
                command="echo weights > $CORRAL_CHECKPOINT_DIR/w.pt; exec sleep 1234.5",
                env={"SECRET": TEAM_B_SECRET},
            )
        )
        wait_for(
            "team-b's job to run",
            lambda: (
                b.get_job("victim").state == "running"
                and b.get_job("victim").replicas[0].pid is not None
            ),
        )
        victim = b.get_job("victim")
        replica_dir = cluster.root / "agents" / "node-1" / "replicas" / victim.replicas[0].id
        b_checkpoint = cluster.root / "home" / "checkpoints" / "team-b" / "victim"
        wait_for("team-b's checkpoint", lambda: (b_checkpoint / "w.pt").exists())
        home = cluster.root / "home"
        targets = {
            "config": str(home / "admin-token"),
            "database": str(home / "corral.db"),
            "node_token": str(cluster.root / "agents" / "node-1" / "node.json"),
            "b_assignment": str(replica_dir / "assignment.json"),
            "b_checkpoint": str(b_checkpoint / "w.pt"),
            "b_output": str(replica_dir / "output.log"),
        }
        writes = {
            "b_checkpoint": str(b_checkpoint / "w.pt"),
            "b_work": str(replica_dir / "work" / "planted"),
            "etc": "/etc/corral-owned",
        }
        a.submit_job(
            JobSpec(
                name="thief",
                entrypoint=["python3", "-c", PROBE],
                env={
                    "SECRET": TEAM_B_SECRET,
                    "TARGETS": json.dumps(targets),
                    "WRITES": json.dumps(writes),
                    "VICTIM_PID": str(victim.replicas[0].pid),
                },
            )
        )
        report = report_of(a, "thief")
        assert report["env_tokens"] == [], "a process environment with a token was readable"
        # Only what corral sets for the replica: none of the agent's own environment.
        assert report["agent_env"] == sorted(
            [
                "CORRAL_ATTEMPT",
                "CORRAL_CHECKPOINT_DIR",
                "CORRAL_JOB",
                "CORRAL_PROGRESS_FILE",
                "CORRAL_PYTHON",
                "CORRAL_RANK",
                "CORRAL_REPLICA_ID",
                "CORRAL_WORKSPACE",
            ]
        )
        reads = report["reads"]
        assert isinstance(reads, dict)
        assert all(outcome != "read" for outcome in reads.values()), reads
        writes_done = report["writes"]
        assert isinstance(writes_done, dict)
        assert all(outcome != "written" for outcome in writes_done.values()), writes_done
        assert (b_checkpoint / "w.pt").read_text() == "weights\n"
        assert not Path("/etc/corral-owned").exists()
        # Its own PID namespace: none of the host's processes, team-b's victim included.
        pids = report["pids"]
        assert isinstance(pids, list) and len(pids) < 10 and victim.replicas[0].pid not in pids
        assert report["kill"] != "killed"
        assert b.get_job("victim").state == "running"
        # Each workspace its own unprivileged user.
        uid = report["uid"]
        assert isinstance(uid, int) and uid >= 1_000_000
        b.submit_job(JobSpec(name="whoami", entrypoint=["python3", "-c", PROBE_UID]))
        b_uid = report_of(b, "whoami")["uid"]
        assert isinstance(b_uid, int) and b_uid >= 1_000_000 and b_uid != uid
        b.cancel_job("victim")


PROBE_UID = 'import json, os; print("REPORT " + json.dumps({"uid": os.getuid()}))'


def test_platform_state_is_private_to_its_user(cluster: Cluster) -> None:
    home = cluster.root / "home"
    wait_for("the database", lambda: (home / "corral.db").exists())
    assert stat.S_IMODE((home / "corral.db").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    node = cluster.root / "agents" / "node-1"
    assert stat.S_IMODE(node.stat().st_mode) == 0o700
    assert stat.S_IMODE((node / "node.json").stat().st_mode) == 0o600


def test_a_checkpoint_dir_outside_the_workspace_is_refused(cluster: Cluster) -> None:
    with cluster.client() as admin:
        a = team_client(cluster, admin, "team-a")
        admin.create_workspace("team-b")
    with a:
        other = cluster.root / "home" / "checkpoints" / "team-b" / "victim"
        for bad in (str(other), str(cluster.root / "home" / "checkpoints" / "team-a/../team-b")):
            response = a._http.post(  # type: ignore[attr-defined]
                "/v1/workspaces/team-a/jobs",
                json={"command": "true", "checkpoint_dir": bad},
            )
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert "checkpoint_dir" in error["message"]
            assert [f["path"] for f in error["fields"]] == ["checkpoint_dir"]
        own = cluster.root / "home" / "checkpoints" / "team-a" / "mine" / "run1"
        a.submit_job(
            JobSpec(name="own", command="touch $CORRAL_CHECKPOINT_DIR/x", checkpoint_dir=str(own))
        )
        assert a.wait_job("own", timeout=60).state == "succeeded", log_of(a, "own")
        # Made for the workspace's user, inside its own 0700 directory.
        workspace_dir = own.parent.parent
        assert stat.S_IMODE(workspace_dir.stat().st_mode) == 0o700
        assert workspace_dir.stat().st_uid == (own / "x").stat().st_uid >= 1_000_000


def test_an_impostor_agent_cannot_take_over_a_node_by_name(cluster: Cluster) -> None:
    inventory = {
        "hostname": "evil",
        "cpus": 1,
        "memory_mb": 1024,
        "disk_mb": 1024,
        "gpus": [],
        "gpu_backend": "none",
        "labels": {},
        "agent_version": "0",
    }
    response = httpx.post(
        cluster.url + "/v1/agent/register",
        json={"join_token": JOIN_TOKEN, "name": "node-1", "inventory": inventory},
        timeout=10,
    )
    assert response.status_code == 409, response.text
    assert "node-1" in response.json()["error"]["message"]
    assert "node_token" not in response.text
    # The real agent was not orphaned: its node still takes work.
    with cluster.client() as admin:
        [node] = [n for n in admin.list_nodes() if n.name == "node-1"]
        assert node.connected and node.condition == "ready"
        admin.submit_job(JobSpec(name="still-works", command="true"))
        assert admin.wait_job("still-works", timeout=60).state == "succeeded"


def test_an_oversized_spec_is_refused_and_names_the_field(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    big = {f"f{i}.txt": "x" * 100_000 for i in range(3)}
    response = httpx.post(
        cluster.url + "/v1/workspaces/default/jobs",
        json={"command": "true", "files": big},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "files" in response.text and "KiB" in response.text
    for field, value in (
        ("env", {f"V{i}": "y" * 1000 for i in range(100)}),
        ("command", "echo " + "z" * 70_000),
    ):
        response = httpx.post(
            cluster.url + "/v1/workspaces/default/jobs",
            json={"command": "true", field: value} if field != "command" else {field: value},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 422, (field, response.text)
        assert field in response.text


def test_a_stopped_replica_gets_its_term_and_leaves_no_process_behind(cluster: Cluster) -> None:
    import psutil

    script = (
        "trap 'echo got-term; exit 3' TERM; "
        # A daemon in a session of its own: outside the process group the agent signals.
        "setsid sleep 4242.5 >/dev/null 2>&1 < /dev/null & "
        "echo started; sleep 1000 & wait"
    )
    with cluster.client() as admin:
        admin.submit_job(JobSpec(name="stopme", command=script))
        wait_for("the job to start", lambda: "started" in admin.job_logs("stopme").data)

        def daemons() -> list[psutil.Process]:
            found = []
            for p in psutil.process_iter(["cmdline"]):
                if "4242.5" in " ".join(p.info["cmdline"] or []):
                    found.append(p)
            return found

        wait_for("the daemon to be running", lambda: bool(daemons()))
        assert all(p.uids().real >= 1_000_000 for p in daemons())
        admin.cancel_job("stopme")
        view = admin.wait_job("stopme", timeout=60)
        assert view.state == "cancelled"
        assert "got-term" in log_of(admin, "stopme")
        wait_for("the daemon to be gone with the replica's PID namespace", lambda: not daemons())


def test_a_users_env_never_reaches_the_root_part_of_the_sandbox(cluster: Cluster) -> None:
    # PYTHONPATH (or LD_PRELOAD) naming code the tenant planted earlier: run by the root
    # init, it would be the tenant's code as root on the node.
    plant = (
        "mkdir -p $HOME/pp && printf '%s\\n' 'import os' "
        '\'open(os.path.join(os.path.dirname(__file__), "ran-as"), "a")'
        ".write(str(os.getuid()) + chr(10))' > $HOME/pp/sitecustomize.py && echo $HOME"
    )
    with cluster.client() as admin:
        admin.submit_job(JobSpec(name="plant", command=plant))
        assert admin.wait_job("plant", timeout=60).state == "succeeded"
        home = log_of(admin, "plant").strip().splitlines()[-1]
        admin.submit_job(
            JobSpec(
                name="trigger",
                entrypoint=["python3", "-c", "print('ok')"],
                env={"PYTHONPATH": f"{home}/pp", "LD_PRELOAD": f"{home}/pp/none.so"},
            )
        )
        assert admin.wait_job("trigger", timeout=60).state == "succeeded"
    host_home = cluster.root / "agents" / "node-1" / "homes" / Path(home).name
    uids = (host_home / "pp" / "ran-as").read_text().split()
    assert uids, "the workload itself honours its own PYTHONPATH"
    assert all(int(uid) >= 1_000_000 for uid in uids), uids


def test_the_real_agent_re_keys_its_own_name_with_its_node_token(cluster: Cluster) -> None:
    # The same node, its server spelled another way (node.json is bound to the URL): it
    # registers again, and proves it is the node with the token it holds.
    node_json = cluster.root / "agents" / "node-1" / "node.json"
    cluster.agents["node-1"].stop()
    saved = json.loads(node_json.read_text())
    saved["server"] = saved["server"].replace("127.0.0.1", "localhost")
    node_json.write_text(json.dumps(saved))
    agent = cluster.agent("node-1", "--fake-gpus", "H100:2", isolation="user")
    cluster.wait_node_ready("node-1")
    assert json.loads(node_json.read_text())["node_token"] != saved["node_token"]
    assert agent.popen is not None and agent.popen.poll() is None
    with cluster.client() as admin:
        assert [n.name for n in admin.list_nodes()] == ["node-1"]


def test_a_directory_the_spec_names_is_seen_only_if_its_user_may_reach_it(
    cluster: Cluster,
) -> None:
    """A working_dir (or an app file's directory) on the node, /tmp included (the replica
    has a private one): shown when the workspace's user could reach it on the host, never
    past a directory it may not enter (issue 10: the README's embeddings endpoint, cloned
    under /tmp, failed with "no such file" under `make up` as root)."""
    shared = Path(tempfile.mkdtemp(prefix="corral-shared-", dir="/tmp"))
    private = Path(tempfile.mkdtemp(prefix="corral-private-", dir="/tmp"))  # 0700, root's
    try:
        shared.chmod(0o755)
        (shared / "hello.txt").write_text("hi from the host\n")
        inner = private / "project"
        inner.mkdir(mode=0o755)
        (inner / "hello.txt").write_text("root's own\n")
        admin = Client(cluster.url, ADMIN_TOKEN, "default")
        team = team_client(cluster, admin, "team-a")
        small = {"cpus": 0.1, "memory": "64Mi"}
        # A link in a directory the tenant may read, to one it may not enter: the bind
        # (as root) would follow it.
        (shared / "way-in").symlink_to(inner)
        runs = (
            ("seen", shared, "cat hello.txt; touch planted || echo read-only"),
            ("hidden", inner, "cat hello.txt"),
            ("linked", shared / "way-in", "cat hello.txt"),
            ("all-of-tmp", Path("/tmp"), f"ls {shared}"),
        )
        for name, where, command in runs:
            spec = {"name": name, "command": command, "working_dir": str(where)}
            team.submit_job(JobSpec.model_validate({**spec, "resources": small}))
        assert team.wait_job("seen", timeout=60).state == "succeeded"
        seen = log_of(team, "seen")
        assert "hi from the host" in seen and "read-only" in seen
        assert not (shared / "planted").exists()  # the host's /tmp is never written
        for name in ("hidden", "linked", "all-of-tmp"):
            assert team.wait_job(name, timeout=60).state == "failed", name
            assert "root's own" not in log_of(team, name)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)
