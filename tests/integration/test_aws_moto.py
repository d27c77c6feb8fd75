"""The aws provider's real code path (boto3, botocore, HTTP) against moto's EC2 server on
loopback: launch with tags, user data and spot options, list, terminate, the default
image, and failures injected into the real call path as EC2 would answer them."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from corral.providers.aws import AwsProvider
from corral.providers.base import (
    InstanceState,
    JoinInfo,
    LaunchErrorKind,
    LaunchRequest,
    ProviderError,
)
from corral.providers.install import user_data
from support.aws import REGION, moto_ec2

SERVER = "http://10.0.0.1:7390"


@pytest.fixture
def moto_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with moto_ec2(monkeypatch) as url:
        yield url


@pytest.fixture
def ec2(moto_url: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)


def joins(*names: str) -> tuple[JoinInfo, ...]:
    return tuple(JoinInfo(SERVER, f"jt-{name}-secret", name, {"team": "ml"}) for name in names)


def request(
    *names: str, pool: str = "gpu", spot: bool = False, zone: str | None = "us-east-1b"
) -> LaunchRequest:
    return LaunchRequest(
        pool=pool,
        instance_type="g5.xlarge",
        region=REGION,
        zone=zone,
        image="ami-0123456789abcdef0",
        spot=spot,
        joins=joins(*names),
    )


def described(ec2: Any, instance_id: str) -> dict[str, Any]:
    reply = ec2.describe_instances(InstanceIds=[instance_id])
    return dict(reply["Reservations"][0]["Instances"][0])


def test_launch_tags_user_data_and_placement(moto_url: str, ec2: Any) -> None:
    aws = AwsProvider(endpoint_url=moto_url)
    made = aws.launch(request("gpu-1", "gpu-2"))
    assert [i.node_name for i in made] == ["gpu-1", "gpu-2"]
    assert len({i.provider_id for i in made}) == 2
    for instance, join in zip(made, joins("gpu-1", "gpu-2"), strict=True):
        data = described(ec2, instance.provider_id)
        tags = {t["Key"]: t["Value"] for t in data["Tags"]}
        assert tags == {
            "Name": join.node_name,
            "corral:managed": "true",
            "corral:pool": "gpu",
            "corral:node": join.node_name,
        }
        assert data["InstanceType"] == "g5.xlarge"
        assert data["ImageId"] == "ami-0123456789abcdef0"
        assert data["Placement"]["AvailabilityZone"] == "us-east-1b"
        assert data.get("InstanceLifecycle") != "spot"
        raw = ec2.describe_instance_attribute(InstanceId=instance.provider_id, Attribute="userData")
        script = base64.b64decode(raw["UserData"]["Value"]).decode()
        # Each instance's own script: its name, its token, the topology labels, the watcher.
        labelled = JoinInfo(
            SERVER,
            join.join_token,
            join.node_name,
            {
                "pool": "gpu",
                "provider": "aws",
                "region": REGION,
                "instance-type": "g5.xlarge",
                "zone": "us-east-1b",
                "team": "ml",
            },
        )
        assert script == user_data(labelled, "/opt/corral", ("--interruption-notices", "aws"))
        assert join.join_token in script and "--interruption-notices aws" in script


def test_spot_list_and_terminate(moto_url: str, ec2: Any) -> None:
    aws = AwsProvider(endpoint_url=moto_url)
    spot = aws.launch(request("s-1", pool="cheap", spot=True, zone=None))
    ondemand = aws.launch(request("o-1", pool="gpu"))
    assert described(ec2, spot[0].provider_id)["InstanceLifecycle"] == "spot"
    # An instance corral did not make is never listed.
    (stranger,) = ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1)[
        "Instances"
    ]

    every = aws.list()
    assert [(i.pool, i.node_name, i.spot) for i in every] == [
        ("cheap", "s-1", True),
        ("gpu", "o-1", False),
    ]
    assert all(i.state in (InstanceState.PENDING, InstanceState.RUNNING) for i in every)
    assert all(i.region == REGION and i.instance_type == "g5.xlarge" for i in every)
    assert all(i.address for i in every)
    assert all(i.interruption_at is None for i in every)
    assert [i.node_name for i in aws.list("cheap")] == ["s-1"]
    assert aws.list("nothing-here") == []

    # Never an instance corral did not make, even named by its id.
    aws.terminate([stranger["InstanceId"]])
    assert described(ec2, stranger["InstanceId"])["State"]["Name"] in ("pending", "running")
    # Unknown ids (never made, malformed-looking) are no error; nor is terminating twice.
    aws.terminate([spot[0].provider_id, "i-00000000000000000"])
    aws.terminate([spot[0].provider_id])
    aws.terminate([])
    states = {i.node_name: i.state for i in aws.list()}
    assert states["s-1"] == InstanceState.TERMINATED
    assert states["o-1"] in (InstanceState.PENDING, InstanceState.RUNNING)
    assert ondemand[0].provider_id in {i.provider_id for i in aws.list("gpu")}


def test_two_clusters_on_one_account_see_only_their_own(moto_url: str, ec2: Any) -> None:
    """Staging and prod sharing an AWS account: each control plane's list (and so its sweep
    of strays) sees only the instances it launched, and cannot terminate the other's."""
    staging = AwsProvider(endpoint_url=moto_url, cluster="staging-id")
    prod = AwsProvider(endpoint_url=moto_url, cluster="prod-id")
    (ours,) = staging.launch(request("s-1"))
    (theirs,) = prod.launch(request("p-1"))
    tags = {t["Key"]: t["Value"] for t in described(ec2, ours.provider_id)["Tags"]}
    assert tags["corral:cluster"] == "staging-id" and tags["corral:managed"] == "true"
    # An instance of no cluster (launched unscoped) and one corral did not make at all.
    (unscoped,) = AwsProvider(endpoint_url=moto_url).launch(request("u-1"))
    (foreign,) = ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1)[
        "Instances"
    ]

    assert [i.provider_id for i in staging.list()] == [ours.provider_id]
    assert [i.provider_id for i in prod.list("gpu")] == [theirs.provider_id]

    # Each asks to terminate every id it could name: only its own goes.
    every = [ours.provider_id, theirs.provider_id, unscoped.provider_id, foreign["InstanceId"]]
    prod.terminate(every)
    state = {i: described(ec2, i)["State"]["Name"] for i in every}
    assert state[theirs.provider_id] in ("shutting-down", "terminated")
    assert all(state[i] in ("pending", "running") for i in every if i != theirs.provider_id)
    assert [i.provider_id for i in prod.list()] == [theirs.provider_id]  # still its own
    staging.terminate([theirs.provider_id, unscoped.provider_id, foreign["InstanceId"]])
    assert all(
        described(ec2, i)["State"]["Name"] in ("pending", "running")
        for i in (ours.provider_id, unscoped.provider_id, foreign["InstanceId"])
    )


def test_a_new_provider_object_lists_by_region(moto_url: str) -> None:
    """After a server restart the provider knows the pools' regions only from its caller."""
    AwsProvider(endpoint_url=moto_url).launch(
        LaunchRequest("west", "t3.micro", "us-west-2", None, "ami-1", False, joins("w-1"))
    )
    session = boto3.Session(region_name=REGION)
    assert AwsProvider(session, moto_url).list() == []
    again = AwsProvider(session, moto_url, regions=["us-west-2"]).list()
    assert [(i.node_name, i.region) for i in again] == [("w-1", "us-west-2")]


def test_default_image_is_the_newest_deep_learning_ami(moto_url: str, ec2: Any) -> None:
    aws = AwsProvider(endpoint_url=moto_url)
    made = aws.launch(LaunchRequest("gpu", "g5.xlarge", REGION, None, None, False, joins("dl-1")))
    image = described(ec2, made[0].provider_id)["ImageId"]
    name = ec2.describe_images(ImageIds=[image])["Images"][0]["Name"]
    assert name.startswith("Deep Learning") and "Ubuntu" in name

    # No such image where the provider looks: a clear error, nothing launched.
    nowhere = AwsProvider(endpoint_url=moto_url, image_owners=["self"])
    with pytest.raises(ProviderError) as caught:
        nowhere.launch(LaunchRequest("gpu", "g5.xlarge", REGION, None, None, False, joins("x")))
    assert caught.value.kind == LaunchErrorKind.INVALID
    assert "--image" in str(caught.value) and "\n" not in str(caught.value)
    assert [i.node_name for i in aws.list()] == ["dl-1"]


def failing_run(session: boto3.Session, moto_url: str, code: str, after: int) -> list[int]:
    """Make EC2 answer RunInstances with `code` from call `after` on, as AWS does (moto
    cannot run out of capacity): botocore's own hook, so the real parse and raise run."""
    calls = [0]

    def hook(**_: Any) -> tuple[Any, dict[str, Any]] | None:
        calls[0] += 1
        if calls[0] <= after:
            return None
        status = 500 if "Capacity" in code else 400
        parsed = {
            "Error": {"Code": code, "Message": f"EC2 says {code}."},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return (AWSResponse(moto_url, status, {}, None), parsed)

    session.events.register("before-call.ec2.RunInstances", hook)
    return calls


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InsufficientInstanceCapacity", LaunchErrorKind.CAPACITY),
        ("VcpuLimitExceeded", LaunchErrorKind.QUOTA),
        ("UnauthorizedOperation", LaunchErrorKind.AUTH),
        ("InvalidAMIID.NotFound", LaunchErrorKind.INVALID),
    ],
)
def test_a_failed_launch_leaves_nothing_running(
    moto_url: str, code: str, kind: LaunchErrorKind
) -> None:
    session = boto3.Session(region_name=REGION)
    calls = failing_run(session, moto_url, code, after=1)
    aws = AwsProvider(session, moto_url)
    with pytest.raises(ProviderError) as caught:
        aws.launch(request("a-1", "a-2", "a-3"))
    assert caught.value.kind == kind
    assert code in str(caught.value) and "a-2" in str(caught.value)
    assert caught.value.retry_elsewhere == (
        kind in (LaunchErrorKind.CAPACITY, LaunchErrorKind.QUOTA)
    )
    assert calls[0] == 2  # it stopped at the first failure
    # All or none: the one that started is terminated.
    assert [(i.node_name, i.state) for i in aws.list()] == [("a-1", InstanceState.TERMINATED)]


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    aws = AwsProvider(boto3.Session(region_name=REGION), f"http://127.0.0.1:{port}")
    with pytest.raises(ProviderError) as caught:
        aws.list()
    assert caught.value.kind == LaunchErrorKind.UNREACHABLE
    assert "did not answer" in str(caught.value)


def test_no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    aws = AwsProvider(boto3.Session(region_name=REGION), "http://127.0.0.1:9")
    with pytest.raises(ProviderError) as caught:
        aws.launch(request("n-1"))
    assert caught.value.kind == LaunchErrorKind.AUTH
    assert "AWS_PROFILE" in str(caught.value)
