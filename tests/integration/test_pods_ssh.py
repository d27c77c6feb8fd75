"""Dev pods with the real OpenSSH client (Debian's ssh, scp, sftp) through the config that
`corral pod ssh-config` writes: ProxyCommand `corral pod proxy` -> control plane -> a confined
agent's session server inside the pod. One cluster and one pod serve the module (each start
costs seconds); the tests that stop a pod or need one of their own make their own."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pexpect
import pytest

from support.cluster import Cluster, free_port, wait_for
from support.pods import (
    PodUser,
    admin,
    http_server_command,
    session_events,
    shared_volume_root,
    start_cluster,
    write_pod_yaml,
)

POD = "dev"
BODY = "hello-from-the-pod"
PROMPT = r"\[pod\]> "


@dataclass
class Env:
    cluster: Cluster
    user: PodUser
    root: Path
    http_port: int


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("pods-ssh")
    with shared_volume_root() as volumes:
        cluster = start_cluster(root, volumes, "--fake-gpus", "H100:2")
        try:
            user = admin(cluster, root)
            port = free_port()
            user.corral("volume", "create", "data")
            spec = write_pod_yaml(root / "pod.yaml", POD, http_server_command(port, BODY))
            user.corral(
                "pod", "create", "-f", str(spec), "--gpus", "H100:1", "--volume", "data:/data"
            )
            user.corral("pod", "ssh-config")
            assert user.ssh_config.exists()
            yield Env(cluster, user, root, port)
        finally:
            cluster.close()


@pytest.fixture
def cluster(env: Env) -> Cluster:
    """The name conftest's failure hook looks for: a failing test shows the cluster's logs."""
    return env.cluster


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_exec_exit_codes_uid_and_gpus(env: Env, cluster: Cluster) -> None:
    u = env.user
    ok = u.ssh(POD, "echo ok")
    assert (ok.returncode, ok.stdout) == (0, "ok\n"), ok.stderr
    assert u.ssh(POD, "exit 7").returncode == 7
    uid = u.ssh(POD, "id -u")
    assert uid.returncode == 0, uid.stderr
    assert int(uid.stdout) >= 1000, "a confined pod runs as its workspace's uid, not root"
    # stderr stays separate from stdout without a PTY.
    split = u.ssh(POD, "echo out; echo err >&2")
    assert (split.stdout, split.stderr.strip().splitlines()[-1]) == ("out\n", "err")
    pod = u.pod(POD)
    assert len(pod["gpus"]) == 1
    cuda = u.ssh(POD, "echo $CUDA_VISIBLE_DEVICES")
    assert cuda.stdout.strip() == str(pod["gpus"][0])


def test_interactive_shell(env: Env, cluster: Cluster) -> None:
    child = pexpect.spawn(
        env.user.ssh_argv("-tt", POD)[0],
        env.user.ssh_argv("-tt", POD)[1:],
        env=env.user.env,
        encoding="utf-8",
        timeout=20,
        dimensions=(24, 80),
    )
    try:
        # A prompt of our own; the echo of this line does not match it (the quotes split it).
        child.sendline("PS1='[pod]''> '")
        child.expect(PROMPT)
        child.sendline("echo hel''lo")
        child.expect("\rhello\r\n")
        child.expect(PROMPT)
        child.setwinsize(40, 100)
        child.sendline("stty size")
        child.expect(r"\r40 100\r\n")
        child.expect(PROMPT)
        child.sendline("sleep 100; echo not-interrupted")
        child.expect("sleep 100")
        started = time.monotonic()
        child.sendintr()
        child.expect(PROMPT, timeout=10)
        assert time.monotonic() - started < 10
        assert "\nnot-interrupted" not in (child.before or ""), "the interrupt missed sleep"
        child.sendline("echo status=$?")
        child.expect(r"status=(\d+)")
        assert child.match.group(1) == "130"
        child.expect(PROMPT)
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3


def test_scp_and_sftp_of_50_mb(env: Env, cluster: Cluster) -> None:
    u = env.user
    src = env.root / "big.bin"
    src.write_bytes(os.urandom(50 * 1024 * 1024))
    want = sha256(src)

    def run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*u.ssh_argv(program=program), *args],
            env=u.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    up = run("scp", "-q", str(src), f"{POD}:scp.bin")
    # In the pod's working directory: where a shell starts.
    there = u.ssh(POD, "pwd; sha256sum scp.bin")
    workdir, line = there.stdout.splitlines()
    assert line.split()[0] == want
    assert "/.pods/" in workdir

    down = env.root / "scp-down.bin"
    got = run("scp", "-q", f"{POD}:scp.bin", str(down))
    assert sha256(down) == want

    back = env.root / "sftp-down.bin"
    batch = env.root / "batch"
    batch.write_text(f"put {src} sftp.bin\nget sftp.bin {back}\n")
    sftp = run("sftp", "-b", str(batch), POD)
    assert sftp.returncode == 0, sftp.stderr
    assert sha256(back) == want
    assert u.ssh(POD, "sha256sum sftp.bin").stdout.split()[0] == want
    # The bytes arrived either way; scp also needs the sftp subsystem's exit status (0), as
    # sshd sends it, or it exits 1 and a script that checks it fails.
    assert (up.returncode, got.returncode) == (0, 0), (
        f"scp exited {up.returncode} (up) and {got.returncode} (down) though the bytes arrived: "
        "the sftp subsystem closed its channel without an exit status"
    )
    u.ssh(POD, "rm -f scp.bin sftp.bin")


def get_body(url: str) -> tuple[int, str]:
    r = httpx.get(url, timeout=10)
    return r.status_code, r.text


def test_local_forward_with_parallel_requests(env: Env, cluster: Cluster) -> None:
    u = env.user
    local = free_port()
    fwd = subprocess.Popen(
        u.ssh_argv(
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"{local}:127.0.0.1:{env.http_port}",
            POD,
        ),
        env=u.env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{local}/index.txt"
        wait_for("the forward to answer", lambda: get_body(url) == (200, BODY), timeout=30)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: get_body(url), range(8)))
        assert results == [(200, BODY)] * 8
    finally:
        fwd.terminate()
        fwd.wait(10)


def socks5_get(socks_port: int, port: int, path: str) -> tuple[int, str]:
    """HTTP/1.0 GET of 127.0.0.1:port through a SOCKS5 proxy, spoken by hand."""
    with socket.create_connection(("127.0.0.1", socks_port), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")  # version 5, one method: no authentication
        assert s.recv(2) == b"\x05\x00"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + port.to_bytes(2, "big"))
        reply = b""
        while len(reply) < 10:
            chunk = s.recv(10 - len(reply))
            assert chunk, "the SOCKS proxy closed the connection"
            reply += chunk
        assert reply[1] == 0, f"SOCKS CONNECT refused: {reply!r}"
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def test_vscode_pattern_dynamic_forward(env: Env, cluster: Cluster) -> None:
    """What Remote-SSH runs: `ssh -T -D PORT NAME bash`, a shell on a pipe plus SOCKS."""
    u = env.user
    socks = free_port()
    ide = subprocess.Popen(
        u.ssh_argv("-T", "-D", str(socks), POD, "bash"),
        env=u.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert ide.stdin is not None and ide.stdout is not None
        ide.stdin.write("echo ready\n")
        ide.stdin.flush()
        assert ide.stdout.readline() == "ready\n"
        got = wait_for(
            "a request through the SOCKS port",
            lambda: socks5_get(socks, env.http_port, "/index.txt"),
            timeout=20,
        )
        assert got == (200, BODY)
        # The shell is still there after the forward.
        ide.stdin.write("echo still\n")
        ide.stdin.flush()
        assert ide.stdout.readline() == "still\n"
    finally:
        ide.terminate()
        ide.wait(10)


def test_job_exec_and_job_ssh(env: Env, cluster: Cluster) -> None:
    u = env.user
    u.corral(
        "job", "run", "-d", "--name", "trainer", "--cpus", "0.1", "--",
        "sh", "-c", "echo in-the-job > /tmp/marker; exec sleep 300",
    )  # fmt: skip
    wait_for(
        "the job to run",
        lambda: (
            json.loads(u.corral("job", "get", "trainer", "--json").stdout)["state"] == "running"
        ),
        timeout=30,
        interval=0.3,
    )

    # /tmp is the replica's own: the marker proves the command ran inside it.
    def cat_marker() -> subprocess.CompletedProcess[str] | None:
        done = u.corral("job", "exec", "trainer", "--", "cat", "/tmp/marker", check=False)
        return done if done.returncode == 0 else None

    marker = wait_for("job exec to see the replica's /tmp", cat_marker, timeout=20, interval=0.3)
    assert marker.stdout.strip() == "in-the-job"
    host = u.corral("job", "exec", "trainer", "--", "hostname")
    assert host.stdout.strip()
    code = u.corral("job", "exec", "trainer", "--", "sh", "-c", "exit 5", check=False)
    assert code.returncode == 5
    viassh = u.corral("job", "ssh", "trainer", "--", "-o", "BatchMode=yes", "echo", "x")
    assert viassh.stdout.strip() == "x"
    u.corral("job", "cancel", "trainer")


def test_heartbeats_unharmed_by_a_saturating_transfer(env: Env, cluster: Cluster) -> None:
    u = env.user
    flood = subprocess.Popen(
        u.ssh_argv(POD, "head -c 20000000000 /dev/zero"),
        env=u.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    received = [0]

    def drain() -> None:
        assert flood.stdout is not None
        while chunk := os.read(flood.stdout.fileno(), 1 << 20):
            received[0] += len(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    ages: list[float] = []
    try:
        wait_for("bytes to flow", lambda: received[0] > 10_000_000, timeout=20)
        before = received[0]
        with httpx.Client(
            base_url=cluster.url,
            headers={"Authorization": f"Bearer {u.env['CORRAL_TOKEN']}"},
            timeout=5,
        ) as http:
            end = time.monotonic() + 8
            while time.monotonic() < end:
                nodes = http.get("/v1/nodes").json()["nodes"]
                node = next(n for n in nodes if n["name"] == "node-a")
                assert node["condition"] == "ready" and node["connected"], node
                ages.append(time.time() - node["last_heartbeat_at"])
                time.sleep(0.2)  # the sampling period, not a synchronisation
        moved = received[0] - before
    finally:
        flood.kill()
        flood.wait(10)
        reader.join(10)
    assert moved > 100_000_000, f"only {moved} bytes in 8 s: the transfer did not saturate"
    assert max(ages) < 3.0, f"heartbeat ages during the transfer: max {max(ages):.2f} s"


def gpus_in_use(u: PodUser) -> int:
    nodes = json.loads(u.corral("node", "ls", "--json").stdout)["nodes"]
    node = next(n for n in nodes if n["name"] == "node-a")
    return sum(1 for g in node["gpus"] if g["allocated"])


def test_stop_and_start_keep_working_dir_and_volume(env: Env, cluster: Cluster) -> None:
    u = env.user
    wrote = u.ssh(POD, "echo work-kept > kept.txt && echo volume-kept > /data/kept.txt")
    assert wrote.returncode == 0, wrote.stderr
    assert gpus_in_use(u) == 1
    u.corral("pod", "stop", POD)
    stopped = u.wait_state(POD, "stopped")
    assert stopped["gpus"] == []
    wait_for("the pod's GPU to be free", lambda: gpus_in_use(u) == 0, timeout=20, interval=0.3)
    refused = u.ssh(POD, "true")
    assert refused.returncode == 255
    assert "stopped" in refused.stderr or "not running" in refused.stderr, refused.stderr
    u.corral("pod", "start", POD)
    u.wait_state(POD, "running")
    both = u.ssh(POD, "cat kept.txt /data/kept.txt")
    assert (both.returncode, both.stdout) == (0, "work-kept\nvolume-kept\n"), both.stderr
    events = [e["kind"] for e in u.pod(POD)["events"]]
    assert "stop" in events and "start" in events, events


def test_idle_stop_waits_for_open_shells(env: Env, cluster: Cluster) -> None:
    u = env.user
    idle_s = 5.0
    u.corral("pod", "create", "idler", "--idle-stop", f"{idle_s:g}s")
    child = pexpect.spawn(
        u.ssh_argv("-tt", "idler")[0],
        u.ssh_argv("-tt", "idler")[1:],
        env=u.env,
        encoding="utf-8",
        timeout=20,
    )
    try:
        child.sendline("PS1='[pod]''> '")
        child.expect(PROMPT)
        opened = time.monotonic()
        assert u.pod("idler")["sessions"] == 1
        # Well past the threshold with the shell open: still running (each look a poll).
        while time.monotonic() - opened < idle_s + 4:
            assert u.pod("idler")["state"] == "running"
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    closed = time.monotonic()
    pod = u.wait_state("idler", "stopped", timeout=idle_s + 20)
    assert time.monotonic() - closed >= idle_s - 1, "it stopped before the idle threshold"
    assert "idle" in (pod["stop_reason"] or ""), pod["stop_reason"]
    shells = session_events(pod)
    assert shells, pod["events"]
    shell = shells[-1]
    assert shell["who"] and shell["origin"]
    assert shell["duration_s"] is not None and shell["duration_s"] >= idle_s + 4 - 1
    assert re.search(r"idle", " ".join(e["text"] for e in pod["events"] if e["kind"] == "stop"))


def test_a_session_gets_the_pods_python_environment(env: Env, cluster: Cluster) -> None:
    """A pod with `environment:` builds it before its command; `pod exec` (like `ssh`) then
    finds that environment first on PATH, as the command did."""
    u = env.user
    spec = write_pod_yaml(
        env.root / "envpod.yaml", "envpod", "sleep 600", environment={"requirements": []}
    )
    u.corral("pod", "create", "-f", str(spec))
    u.wait_state("envpod", "running")
    probe = "echo $VIRTUAL_ENV; command -v python"

    def seen() -> list[str] | None:
        done = u.corral("pod", "exec", "envpod", "--", "sh", "-c", probe, check=False)
        lines = done.stdout.split()
        return lines if done.returncode == 0 and len(lines) == 2 and lines[0] else None

    venv, python = wait_for("the pod's environment in a session", seen, timeout=60)
    assert "/.cache/corral/envs/" in venv, venv
    assert python == f"{venv}/bin/python", python
    u.corral("pod", "delete", "envpod")
