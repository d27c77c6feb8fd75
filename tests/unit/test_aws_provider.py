"""The aws provider's pure parts: error mapping by AWS code, instances as EC2 describes
them, spot interruption times, idempotency tokens and node labels. The calls themselves
run against moto's server in tests/integration/test_aws_moto.py."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
)

from corral.providers.aws import (
    AwsProvider,
    client_token,
    interruption_at,
    node_labels,
    to_instance,
)
from corral.providers.aws_errors import map_error
from corral.providers.base import (
    InstanceState,
    JoinInfo,
    LaunchErrorKind,
    LaunchRequest,
    ProviderError,
)


def client_error(code: str, message: str = "something\nwent wrong") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "RunInstances")


@pytest.mark.parametrize(
    ("code", "kind", "fix"),
    [
        ("InsufficientInstanceCapacity", LaunchErrorKind.CAPACITY, "next-cheapest"),
        ("Unsupported", LaunchErrorKind.CAPACITY, "another zone"),
        ("SpotMaxPriceTooLow", LaunchErrorKind.CAPACITY, "next-cheapest"),
        ("InstanceLimitExceeded", LaunchErrorKind.QUOTA, "Service Quotas"),
        ("VcpuLimitExceeded", LaunchErrorKind.QUOTA, "--max"),
        ("MaxSpotInstanceCountExceeded", LaunchErrorKind.QUOTA, "Service Quotas"),
        ("AuthFailure", LaunchErrorKind.AUTH, "ec2:RunInstances"),
        ("UnauthorizedOperation", LaunchErrorKind.AUTH, "ec2:RunInstances"),
        ("InvalidAMIID.NotFound", LaunchErrorKind.INVALID, "--image"),
        ("InvalidAMIID.Malformed", LaunchErrorKind.INVALID, "--image"),
        ("InvalidParameterValue", LaunchErrorKind.INVALID, "--type"),
        ("RequestLimitExceeded", LaunchErrorKind.UNREACHABLE, "again later"),
    ],
)
def test_client_errors_map_by_code(code: str, kind: LaunchErrorKind, fix: str) -> None:
    error = map_error(client_error(code), "launching n-1 (p5.48xlarge in us-east-1a)")
    assert error.kind == kind
    text = str(error)
    assert "\n" not in text
    assert code in text and "launching n-1" in text and fix in text
    assert "something went wrong" in text  # AWS's own words, on one line
    assert error.retry_elsewhere == (kind in (LaunchErrorKind.CAPACITY, LaunchErrorKind.QUOTA))


def test_an_unknown_code_is_reported_as_is() -> None:
    error = map_error(client_error("SomethingNew", "new"), "launching x")
    assert error.kind == LaunchErrorKind.INVALID and "SomethingNew: new" in str(error)
    assert not error.retry_elsewhere


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (NoCredentialsError(), LaunchErrorKind.AUTH, "AWS_PROFILE"),
        (
            EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com"),
            LaunchErrorKind.UNREACHABLE,
            "did not answer",
        ),
        (ParamValidationError(report="bad InstanceType"), LaunchErrorKind.INVALID, "bad"),
    ],
)
def test_botocore_exceptions_map_by_class(
    exc: Exception, kind: LaunchErrorKind, words: str
) -> None:
    error = map_error(exc, "listing instances in us-east-1")
    assert error.kind == kind and words in str(error) and "\n" not in str(error)


def test_interruption_time_from_the_spot_request() -> None:
    marked = datetime(2026, 12, 3, 17, 0, 0, tzinfo=UTC)
    request = {"Status": {"Code": "marked-for-termination", "UpdateTime": marked}}
    assert interruption_at(request) == marked.timestamp() + 120
    assert interruption_at({"Status": {"Code": "fulfilled", "UpdateTime": marked}}) is None
    assert interruption_at(None) is None


def test_an_instance_as_ec2_describes_it() -> None:
    data = {
        "InstanceId": "i-0abc",
        "InstanceType": "p5.48xlarge",
        "State": {"Name": "shutting-down"},
        "Placement": {"AvailabilityZone": "us-east-1a"},
        "InstanceLifecycle": "spot",
        "PrivateIpAddress": "10.1.2.3",
        "Tags": [
            {"Key": "corral:pool", "Value": "big"},
            {"Key": "corral:node", "Value": "big-1"},
        ],
    }
    marked = datetime(2026, 12, 3, 17, 0, 0, tzinfo=UTC)
    request = {"Status": {"Code": "marked-for-termination", "UpdateTime": marked}}
    got = to_instance(data, "us-east-1", request)
    assert (got.provider_id, got.node_name, got.pool) == ("i-0abc", "big-1", "big")
    assert got.state == InstanceState.STOPPING
    assert (got.zone, got.spot, got.address) == ("us-east-1a", True, "10.1.2.3")
    assert got.interruption_at == marked.timestamp() + 120
    plain = to_instance({"InstanceId": "i-1", "State": {"Name": "running"}}, "r", None)
    assert plain.state == InstanceState.RUNNING and not plain.spot and plain.node_name == ""


def test_client_token_is_per_join() -> None:
    a = JoinInfo("http://s", "token-a", "n-1")
    assert client_token(a) == client_token(JoinInfo("http://s", "token-a", "n-1"))
    assert client_token(a) != client_token(JoinInfo("http://s", "token-b", "n-1"))
    assert client_token(a) != client_token(JoinInfo("http://s", "token-a", "n-2"))
    assert len(client_token(a)) <= 64 and "token-a" not in client_token(a)


def test_node_labels_carry_the_topology() -> None:
    join = JoinInfo("http://s", "t", "n-1", {"team": "ml", "zone": "us-east-1c"})
    request = LaunchRequest("p", "g5.xlarge", "us-east-1", "us-east-1a", None, True, (join,))
    assert node_labels(request, join) == {
        "pool": "p",
        "provider": "aws",
        "region": "us-east-1",
        "instance-type": "g5.xlarge",
        "zone": "us-east-1c",  # the pool's own label wins
        "team": "ml",
    }
    no_zone = LaunchRequest("p", "g5.xlarge", "us-east-1", None, None, True, (join,))
    assert "zone" not in node_labels(no_zone, JoinInfo("http://s", "t", "n-1"))


def test_user_data_over_ec2s_limit_is_refused_before_any_call() -> None:
    labels = {f"label-{i}": "v" * 60 for i in range(200)}
    join = JoinInfo("http://s", "t", "n-1", labels)
    request = LaunchRequest("p", "g5.xlarge", "us-east-1", None, "ami-1", False, (join,))
    aws = AwsProvider(boto3.Session(region_name="us-east-1"), "http://127.0.0.1:9")
    with pytest.raises(ProviderError) as caught:
        aws.launch(request)
    assert caught.value.kind == LaunchErrorKind.INVALID
    assert "16384" in str(caught.value) and "fewer or shorter labels" in str(caught.value)
