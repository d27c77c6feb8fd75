"""The aws provider's user data, run as cloud-init would on a new instance: launched through
moto's EC2 server, read back from EC2, and executed as root in a network-namespace host
that reaches nothing but the control plane's bridge (no internet, no package index).

```
 test ─ AwsProvider.launch ─► moto (EC2 on loopback) ─ userData ─┐
                                                                 ▼
 root namespace: corral server on the bridge ◄── host ud-1: bash user-data
   /v1/agent/bundle (join token)                  fetch bundle → venv → supervisor → agent
 fake IMDS on the bridge ◄──────────────────────── agent --interruption-notices aws
```

The node joins with the topology labels, runs a job, and a spot notice drains it.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import pytest

from corral.client import Client
from corral.providers.aws import AwsProvider
from corral.providers.base import JoinInfo, LaunchRequest
from corral.spec import parse_job_spec
from corral.wire.api import NodeView
from support.aws import REGION, FakeImds, clean_env, moto_ec2
from support.cluster import wait_for
from support.multihost import HostCluster
from support.netns import make_hosts

INSTALL_TIMEOUT_S = 240  # the server builds the agent bundle on the first request


def named(client: Client, name: str) -> NodeView | None:
    return next((n for n in client.list_nodes() if n.name == name), None)


@pytest.fixture
def hc(tmp_path: Path) -> Iterator[HostCluster]:
    hosts = make_hosts(1, names=["ud-1"])
    cluster = HostCluster(hosts, tmp_path, fake_gpus=None, heartbeat=0.5)
    try:
        cluster.start_server()
        yield cluster
    finally:
        print(cluster.logs())
        install_log = tmp_path / "opt" / "agent.log"
        if install_log.exists():
            print("--- agent.log ---\n" + install_log.read_text(errors="replace")[-4000:])
        cluster.close()


def test_user_data_installs_and_joins_a_host(
    hc: HostCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = hc.hosts[0]
    install_dir = tmp_path / "opt"
    with hc.client() as client:
        # The pool controller binds these to each instance's token (the node cannot).
        bound = {"pool": "spot-h100", "instance-type": "p5.48xlarge", "spot": "true"}
        token = client.create_join_token("ud-1", ttl_s=600, max_uses=1, labels=bound).token
    assert token
    with moto_ec2(monkeypatch) as moto_url, FakeImds(hc.hosts.gateway) as imds:
        aws = AwsProvider(
            endpoint_url=moto_url,
            install_dir=str(install_dir),
            # Test-only: fake GPUs, the fake metadata service, a quick poll; replicas share
            # pytest's 0700 directories, so unconfined.
            agent_args=(
                "--fake-gpus",
                "H100:1",
                "--isolation",
                "none",
                "--imds-url",
                imds.url,
                "--interruption-poll",
                "0.2",
            ),
        )
        [instance] = aws.launch(
            LaunchRequest(
                pool="spot-h100",
                instance_type="p5.48xlarge",
                region=REGION,
                zone="us-east-1a",
                image=None,
                spot=True,
                joins=(JoinInfo(hc.url, token, "ud-1", {"team": "ml"}),),
            )
        )
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
        raw = ec2.describe_instance_attribute(InstanceId=instance.provider_id, Attribute="userData")
        script = tmp_path / "user-data"
        script.write_bytes(base64.b64decode(raw["UserData"]["Value"]))

        # cloud-init: root, a bare environment, on the new machine.
        ran = subprocess.run(
            host.command(["bash", str(script)]),
            env={**clean_env(), "NETNS_HARNESS_HOST": host.marker},
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert "started the agent for ud-1" in ran.stderr

        with hc.client() as client:
            node = wait_for(
                "node ud-1 ready",
                lambda: (
                    (n := named(client, "ud-1")) is not None
                    and n.condition == "ready"
                    and n.connected
                    and n
                ),
                timeout=90,
            )
            assert {k: node.labels.get(k) for k in ("pool", "provider", "region", "zone")} == {
                "pool": "spot-h100",
                "provider": "aws",
                "region": REGION,
                "zone": "us-east-1a",
            }
            assert node.labels["instance-type"] == "p5.48xlarge"
            assert node.labels["team"] == "ml"
            assert node.address == host.address  # it dialled out from inside the host

            # The join token: a 0600 file, on no command line.
            mode = os.stat(install_dir / "join-token").st_mode & 0o777
            assert mode == 0o600
            for pid in host.pids():
                try:
                    argv = " ".join(psutil.Process(pid).cmdline())
                except psutil.Error:
                    continue
                assert token not in argv

            spec = {
                "name": "train",
                "command": "exec sleep 600",
                "resources": {"gpus": "H100:1", "cpus": 0.1, "memory": "64Mi"},
                "preemptible": True,
            }
            client.submit_job(parse_job_spec(spec))
            wait_for(
                "the job running on ud-1",
                lambda: (
                    (j := client.get_job("train")).state == "running"
                    and [r.node for r in j.replicas] == ["ud-1"]
                ),
                timeout=60,
            )
            assert imds.token_puts >= 1 and imds.unauthorized == 0

            imds.notice = {"action": "terminate", "time": "2026-12-03T17:02:00Z"}
            drained = wait_for(
                "ud-1 drained for the interruption",
                lambda: (
                    (n := named(client, "ud-1")) is not None and n.condition == "cordoned" and n
                ),
            )
            assert drained.cordon_reason == (
                "spot interruption: the instance is reclaimed at 2026-12-03T17:02:00Z"
            )
            requeued = wait_for(
                "the job queued again",
                lambda: (j := client.get_job("train")).state == "pending" and j,
            )
            assert requeued.attempts[0].end_cause == "preempted"
