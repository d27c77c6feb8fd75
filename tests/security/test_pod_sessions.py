"""Who may enter a dev pod, and where a session may go once in: with the real OpenSSH client
through the generated config, a real control plane and a confined agent (root).

Only members of the pod's workspace with a write role open sessions; keys are the
workspace's own; a session's forwards reach its own pod's listeners, not another pod's or
the node's; every session is in the pod's events."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from corral.client.relay import relay_path
from corral.urls import ws_url
from support.cluster import Cluster, free_port, wait_for
from support.pods import (
    CORRAL,
    PodUser,
    admin,
    http_server_command,
    session_events,
    shared_volume_root,
    start_cluster,
    write_pod_yaml,
)


@dataclass
class Env:
    cluster: Cluster
    owner: PodUser  # the admin, in workspace default
    viewer: PodUser  # a viewer of default
    stranger: PodUser  # a member of workspace other
    ports: dict[str, int]  # pod -> its HTTP server's port


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("pod-sessions")
    with shared_volume_root() as volumes:
        cluster = start_cluster(root, volumes)
        try:
            owner = admin(cluster, root)
            ports = {"alpha": free_port(), "beta": free_port()}
            for name, port in ports.items():
                spec = write_pod_yaml(root / f"{name}.yaml", name, http_server_command(port, name))
                owner.corral("pod", "create", "-f", str(spec))
            owner.corral("pod", "ssh-config")
            with cluster.client() as client:
                client.create_workspace("other")
                viewer = client.create_token("viewer", workspace="default").token
                member = client.create_token("member", workspace="other").token
            assert viewer and member
            stranger = PodUser(cluster, root / "stranger-home", member, "other")
            stranger.corral("pod", "ssh-config")  # makes and registers its key in `other`
            yield Env(
                cluster,
                owner,
                PodUser(cluster, root / "viewer-home", viewer, "default"),
                stranger,
                ports,
            )
        finally:
            cluster.close()


def wait_serving(u: PodUser, pod: str, port: int) -> None:
    wait_for(
        f"{pod}'s HTTP server",
        lambda: u.ssh(pod, f"exec 3<>/dev/tcp/127.0.0.1/{port}").returncode == 0,
        timeout=20,
        interval=0.3,
    )


def relay_status(cluster: Cluster, token: str, workspace: str, pod: str) -> int | None:
    """The HTTP status the relay refuses the WebSocket with; None when it accepts."""
    url = ws_url(cluster.url, relay_path(workspace, "pod", pod))
    try:
        with connect(url, additional_headers={"Authorization": f"Bearer {token}"}):
            return None
    except InvalidStatus as exc:
        return int(exc.response.status_code)


def test_a_viewer_lists_pods_but_cannot_enter(env: Env) -> None:
    listed = env.viewer.corral("pod", "ls")
    assert "alpha" in listed.stdout
    proxy = env.viewer.corral("pod", "proxy", "alpha", check=False)
    assert proxy.returncode == 255
    assert "viewer" in proxy.stderr, proxy.stderr
    # OpenSSH through the owner's config, with the viewer's token (the ProxyCommand's).
    as_viewer = PodUser(env.cluster, env.owner.home, env.viewer.env["CORRAL_TOKEN"], "default")
    ssh = as_viewer.ssh("alpha", "echo entered")
    assert ssh.returncode == 255
    assert "entered" not in ssh.stdout
    assert "viewer" in ssh.stderr, ssh.stderr
    assert relay_status(env.cluster, env.viewer.env["CORRAL_TOKEN"], "default", "alpha") == 403


def test_another_workspace_cannot_open_a_session(env: Env) -> None:
    token = env.stranger.env["CORRAL_TOKEN"]
    assert relay_status(env.cluster, token, "default", "alpha") == 403
    proxy = env.stranger.corral("pod", "proxy", "--workspace", "default", "alpha", check=False)
    assert proxy.returncode == 255
    assert "403" in proxy.stderr and "workspace 'other'" in proxy.stderr, proxy.stderr
    # Its own workspace has no such pod either: its name is not a way in.
    assert relay_status(env.cluster, token, "other", "alpha") == 404


def ssh_with_key(env: Env, key: Path) -> subprocess.CompletedProcess[str]:
    """ssh to alpha through the owner's relay (an allowed token) authenticating with `key`
    only."""
    o = env.owner
    known = o.home / ".corral" / "ssh" / "known_hosts"
    proxy = " ".join([*CORRAL, "pod", "proxy", "--workspace", "default", "alpha"])
    return subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
            "-o", f"ProxyCommand={proxy}",
            "-o", "HostKeyAlias=corral.default",
            "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-i", str(key),
            "corral@alpha", "echo entered",
        ],
        env=o.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_keys_are_per_workspace(env: Env) -> None:
    own = ssh_with_key(env, env.owner.home / ".corral" / "ssh" / "id_ed25519")
    assert (own.returncode, own.stdout) == (0, "entered\n"), own.stderr
    theirs = ssh_with_key(env, env.stranger.home / ".corral" / "ssh" / "id_ed25519")
    assert theirs.returncode == 255
    assert "entered" not in theirs.stdout
    assert "Permission denied" in theirs.stderr, theirs.stderr


def test_forwards_reach_only_the_pods_own_listeners(env: Env) -> None:
    o = env.owner
    wait_serving(o, "alpha", env.ports["alpha"])
    wait_serving(o, "beta", env.ports["beta"])
    own, other_pod, control_plane = free_port(), free_port(), free_port()
    fwd = subprocess.Popen(
        o.ssh_argv(
            "-N",
            "-L", f"{own}:127.0.0.1:{env.ports['alpha']}",
            "-L", f"{other_pod}:127.0.0.1:{env.ports['beta']}",
            "-L", f"{control_plane}:127.0.0.1:{env.cluster.port}",
            "alpha",
        ),
        env=o.env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{own}/index.txt"
        got = wait_for("the pod's own server through -L", lambda: httpx.get(url, timeout=5))
        assert (got.status_code, got.text) == (200, "alpha")
        for port in (other_pod, control_plane):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{port}/index.txt", timeout=5)
        # Beta's server is up all along (its own pod reaches it).
        beta = o.ssh("beta", f"exec 3<>/dev/tcp/127.0.0.1/{env.ports['beta']}")
        assert beta.returncode == 0
    finally:
        fwd.terminate()
        _, err = fwd.communicate(timeout=10)
    assert err.count("administratively prohibited") >= 2, err
    # -W (a ProxyJump's hop) is a direct-tcpip channel too.
    hop = o.ssh("-W", f"127.0.0.1:{env.ports['beta']}", "alpha")
    assert hop.returncode == 255 and "open failed" in hop.stderr, hop.stderr


def test_every_session_is_in_the_pods_events(env: Env) -> None:
    o = env.owner
    before = len(session_events(o.pod("alpha")))
    for _ in range(3):
        assert o.ssh("alpha", "true").returncode == 0

    def closed() -> list[dict[str, Any]] | None:
        found = session_events(o.pod("alpha"))
        done = len(found) >= before + 3 and all(e["duration_s"] is not None for e in found)
        return found if done else None

    events = wait_for("three more closed sessions in alpha's events", closed, timeout=20)
    for event in events[before:]:
        assert event["who"], event
        assert event["origin"] and "127.0.0.1" in event["origin"], event
        assert event["duration_s"] >= 0, event
