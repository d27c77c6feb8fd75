"""EC2's failures as ProviderErrors: the kind from the AWS error code (never from the
message text, which AWS may reword), the message one line naming what was attempted and
the fix. Capacity and quota mean "try the next-cheapest choice" (base.ProviderError)."""

from __future__ import annotations

from corral.providers.base import LaunchErrorKind, ProviderError

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
        "Unsupported",
        "SpotMaxPriceTooLow",
    }
)
QUOTA_CODES = frozenset(
    {
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "ResourceLimitExceeded",
    }
)
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "RequestExpired",
        "OptInRequired",
    }
)
INVALID_PREFIXES = ("InvalidAMIID", "InvalidParameter", "InvalidInstanceType", "InvalidSubnet")
BUSY_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "InternalError", "Unavailable", "ServiceUnavailable"}
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def map_error(exc: Exception, what: str) -> ProviderError:
    """A boto3/botocore failure as a ProviderError: its kind from the AWS error code (or the
    exception's class), its message one line naming `what` was attempted and the fix."""
    from botocore.exceptions import (  # type: ignore[import-untyped]
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ProviderError(
            LaunchErrorKind.AUTH,
            f"aws: {what}: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY for the server, or give its host an instance role)",
        )
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return ProviderError(
            LaunchErrorKind.UNREACHABLE,
            f"aws: {what}: the EC2 API did not answer ({_one_line(str(exc))}); check the "
            "server's network and AWS_ENDPOINT_URL",
        )
    if isinstance(exc, NoRegionError | ParamValidationError):
        return ProviderError(
            LaunchErrorKind.INVALID, f"aws: {what}: {_one_line(str(exc))} (check the pool)"
        )
    if not isinstance(exc, ClientError):
        return ProviderError(LaunchErrorKind.UNREACHABLE, f"aws: {what}: {_one_line(str(exc))}")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "") or "")
    said = _one_line(str(error.get("Message", "") or code))
    if code in CAPACITY_CODES:
        return ProviderError(
            LaunchErrorKind.CAPACITY,
            f"aws: {what}: no capacity now ({code}: {said}); corral tries the next-cheapest "
            "choice; another zone or instance type may have some",
        )
    if code in QUOTA_CODES:
        return ProviderError(
            LaunchErrorKind.QUOTA,
            f"aws: {what}: the account's limit is reached ({code}: {said}); ask AWS for a "
            "higher quota (Service Quotas) or lower the pool's --max",
        )
    if code in AUTH_CODES:
        return ProviderError(
            LaunchErrorKind.AUTH,
            f"aws: {what}: credentials refused ({code}: {said}); give the server's AWS "
            "identity ec2:RunInstances, ec2:DescribeInstances, ec2:TerminateInstances, "
            "ec2:CreateTags and ec2:DescribeImages",
        )
    if code.startswith(INVALID_PREFIXES):
        return ProviderError(
            LaunchErrorKind.INVALID,
            f"aws: {what}: {code}: {said} (check the pool's --image, --type and --zone)",
        )
    if code in BUSY_CODES:
        return ProviderError(
            LaunchErrorKind.UNREACHABLE,
            f"aws: {what}: the EC2 API is busy ({code}: {said}); corral tries again later",
        )
    return ProviderError(LaunchErrorKind.INVALID, f"aws: {what}: {code}: {said}")
