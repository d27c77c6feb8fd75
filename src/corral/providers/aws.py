"""EC2 through boto3: instances whose user data installs the agent and joins them.

```
 launch(request)  image: request.image, else the newest Deep Learning AMI (SSM parameter,
   │              then a name search among Amazon's images), else a clear error
   ├─ per JoinInfo: run_instances(1, UserData = install.user_data(join, ...), tags,
   │                spot market options, zone), ClientToken = hash(node, token)
   └─ any failure: terminate what this call started, raise ProviderError (one line)
 list(pool)       describe_instances tag:corral:managed=true (+ tag:corral:pool,
                  + tag:corral:cluster), every region this provider knows; spot requests
                  marked for termination -> Instance.interruption_at
 terminate(ids)   the ids that exist (looked up by filter, with the cluster's tag: an
                  unknown id, or another cluster's, is no error and is left alone)
```

`cluster`: the control plane's id (server/services/cluster.py). Two control planes sharing
an AWS account (staging and prod) each see only their own instances, so neither's sweep of
strays terminates the other's nodes.

Credentials come only from boto3's standard chain (environment, profile, instance role):
corral stores none. One instance per run_instances call: each has its own user data (its
node name and one-use join token). Errors are mapped by their AWS code, never by their text.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from corral.providers.aws_errors import map_error
from corral.providers.base import (
    Instance,
    InstanceState,
    JoinInfo,
    LaunchErrorKind,
    LaunchRequest,
    ProviderError,
)
from corral.providers.install import DEFAULT_INSTALL_DIR, user_data

if TYPE_CHECKING:
    import boto3  # type: ignore[import-untyped]

TAG_POOL = "corral:pool"
TAG_NODE = "corral:node"
TAG_MANAGED = "corral:managed"
TAG_CLUSTER = "corral:cluster"
# Where AWS publishes the current Deep Learning AMI (NVIDIA driver, Ubuntu 22.04).
DLAMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
DLAMI_NAME = "Deep Learning*Ubuntu*"
# A spot instance is reclaimed two minutes after its notice.
SPOT_NOTICE_S = 120.0
# Spot request status codes that mean "the instance is being taken back".
INTERRUPTION_CODES = frozenset(
    {
        "marked-for-termination",
        "marked-for-stop",
        "marked-for-hibernation",
        "instance-terminated-by-price",
        "instance-terminated-no-capacity",
        "instance-terminated-capacity-oversubscribed",
    }
)
# EC2 refuses user data over 16 KiB (before base64).
USER_DATA_LIMIT = 16 * 1024
# The agent watches the instance metadata service for its own notice (agent/interruption.py).
AGENT_ARGS = ("--interruption-notices", "aws")

_STATES = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "shutting-down": InstanceState.STOPPING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPING,
    "terminated": InstanceState.TERMINATED,
}


def client_token(join: JoinInfo) -> str:
    """run_instances' idempotency token: a retried launch of the same join starts nothing
    new. A fresh join token (each launch gets one) makes a fresh instance."""
    return hashlib.sha256(f"{join.node_name}\0{join.join_token}".encode()).hexdigest()[:64]


def node_labels(request: LaunchRequest, join: JoinInfo) -> dict[str, str]:
    """The topology labels a node made here registers with; the join's own labels (the
    pool's) win where they say otherwise."""
    labels = {
        "pool": request.pool,
        "provider": "aws",
        "region": request.region,
        "instance-type": request.instance_type,
    }
    if request.zone:
        labels["zone"] = request.zone
    return {**labels, **join.labels}


def _tags(items: Sequence[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or ()}


def interruption_at(request: dict[str, Any] | None) -> float | None:
    """When a spot instance goes, from its spot request as describe_spot_instance_requests
    gives it: two minutes after the request was marked; None when it is not marked."""
    if not request:
        return None
    status = request.get("Status") or {}
    if status.get("Code") not in INTERRUPTION_CODES:
        return None
    marked = status.get("UpdateTime")
    return (marked.timestamp() if marked is not None else 0.0) + SPOT_NOTICE_S


def to_instance(data: dict[str, Any], region: str, spot_request: dict[str, Any] | None) -> Instance:
    """One EC2 instance (describe_instances' shape) as a provider Instance."""
    tags = _tags(data.get("Tags"))
    state = _STATES.get(str((data.get("State") or {}).get("Name")), InstanceState.PENDING)
    return Instance(
        provider_id=str(data["InstanceId"]),
        node_name=tags.get(TAG_NODE, ""),
        pool=tags.get(TAG_POOL, ""),
        state=state,
        instance_type=str(data.get("InstanceType", "")),
        region=region,
        zone=(data.get("Placement") or {}).get("AvailabilityZone"),
        spot=data.get("InstanceLifecycle") == "spot",
        address=data.get("PrivateIpAddress") or data.get("PublicIpAddress"),
        interruption_at=interruption_at(spot_request),
    )


class AwsProvider:
    """The `aws` provider. `regions`: where `list` and `terminate` look besides the
    regions this object launched in (after a restart: the aws pools' regions) and the
    session's own region. `endpoint_url`: an EC2-compatible endpoint (tests: moto's server);
    boto3 also honours AWS_ENDPOINT_URL. `agent_args`: more `corral agent` flags for the
    user data (after `--interruption-notices aws`). `cluster`: when set, launches tag it
    and `list`/`terminate` see only instances tagged with it (another control plane's are
    invisible); empty: every corral-managed instance (one control plane per account)."""

    name = "aws"
    static = False

    def __init__(
        self,
        session: boto3.Session | None = None,
        endpoint_url: str | None = None,
        *,
        regions: Sequence[str] = (),
        install_dir: str = DEFAULT_INSTALL_DIR,
        image_owners: Sequence[str] = ("amazon",),
        agent_args: Sequence[str] = (),
        cluster: str = "",
    ) -> None:
        import boto3

        self._session = session or boto3.Session()
        self._endpoint_url = endpoint_url
        self._install_dir = install_dir
        self._image_owners = list(image_owners)
        self._agent_args = (*AGENT_ARGS, *agent_args)
        self._cluster = cluster
        self._regions: set[str] = set(regions)
        if self._session.region_name:
            self._regions.add(self._session.region_name)
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe to make clients

    def _client(self, service: str, region: str) -> Any:
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                self._clients[key] = self._session.client(
                    service,
                    region_name=region,
                    endpoint_url=self._endpoint_url,
                )
            return self._clients[key]

    # -- launch ----------------------------------------------------------------------------

    def default_image(self, region: str) -> str:
        """The newest Deep Learning AMI in `region`: AWS's SSM parameter for it, else the
        newest of Amazon's images named like one; ProviderError(INVALID) if none."""
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            found = self._client("ssm", region).get_parameter(Name=DLAMI_PARAMETER)
            return str(found["Parameter"]["Value"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "ParameterNotFound",
                "AccessDeniedException",
            ):
                raise map_error(exc, f"looking up the Deep Learning AMI in {region}") from exc
        except Exception as exc:
            raise map_error(exc, f"looking up the Deep Learning AMI in {region}") from exc
        try:
            images = self._client("ec2", region).describe_images(
                Owners=self._image_owners,
                Filters=[
                    {"Name": "name", "Values": [DLAMI_NAME]},
                    {"Name": "state", "Values": ["available"]},
                    {"Name": "architecture", "Values": ["x86_64"]},
                ],
            )["Images"]
        except Exception as exc:
            raise map_error(exc, f"looking up the Deep Learning AMI in {region}") from exc
        if not images:
            raise ProviderError(
                LaunchErrorKind.INVALID,
                f"aws: no Deep Learning AMI found in {region} (SSM {DLAMI_PARAMETER} or "
                f"images named {DLAMI_NAME!r}); give the pool an image: --image ami-...",
            )
        newest = max(images, key=lambda i: (str(i.get("CreationDate", "")), i["ImageId"]))
        return str(newest["ImageId"])

    def launch(self, request: LaunchRequest) -> list[Instance]:
        if not request.joins:
            return []
        self._regions.add(request.region)
        image = request.image or self.default_image(request.region)
        ec2 = self._client("ec2", request.region)
        started: list[Instance] = []
        for join in request.joins:
            where = f"{request.instance_type} in {request.zone or request.region}"
            try:
                args = self._run_args(request, join, image)
            except ProviderError:
                self._undo(request.region, started)
                raise
            try:
                reply = ec2.run_instances(**args)
            except Exception as exc:
                error = map_error(exc, f"launching {join.node_name} ({where})")
                self._undo(request.region, started)
                raise error from exc
            for data in reply.get("Instances", ()):
                started.append(to_instance(data, request.region, None))
        return started

    def _run_args(self, request: LaunchRequest, join: JoinInfo, image: str) -> dict[str, Any]:
        labelled = JoinInfo(
            server_url=join.server_url,
            join_token=join.join_token,
            node_name=join.node_name,
            labels=node_labels(request, join),
        )
        tags = [
            {"Key": "Name", "Value": join.node_name},
            {"Key": TAG_MANAGED, "Value": "true"},
            {"Key": TAG_POOL, "Value": request.pool},
            {"Key": TAG_NODE, "Value": join.node_name},
        ]
        if self._cluster:
            tags.append({"Key": TAG_CLUSTER, "Value": self._cluster})
        script = user_data(labelled, self._install_dir, self._agent_args)
        if len(script.encode()) > USER_DATA_LIMIT:
            raise ProviderError(
                LaunchErrorKind.INVALID,
                f"aws: the user data for {join.node_name} is {len(script.encode())} bytes, over "
                f"EC2's {USER_DATA_LIMIT}: give the pool fewer or shorter labels",
            )
        args: dict[str, Any] = {
            "ImageId": image,
            "InstanceType": request.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            # Every instance watches for notices: on-demand ones simply never get one.
            "UserData": script,
            "ClientToken": client_token(join),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
            # The agent's interruption watcher reads the metadata service with IMDSv2.
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        }
        if request.zone:
            args["Placement"] = {"AvailabilityZone": request.zone}
        if request.spot:
            args["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        return args

    def _undo(self, region: str, started: Sequence[Instance]) -> None:
        """All or none: terminate what a failed launch started (best effort: the pool
        controller's list finds any that survive by their tags)."""
        if not started:
            return
        try:
            self._client("ec2", region).terminate_instances(
                InstanceIds=[i.provider_id for i in started]
            )
        except Exception:  # the launch error is the one to report
            return

    # -- list / terminate ------------------------------------------------------------------

    def _described(self, region: str, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        pages = self._client("ec2", region).get_paginator("describe_instances")
        for page in pages.paginate(Filters=filters):
            for reservation in page.get("Reservations", ()):
                yield from reservation.get("Instances", ())

    def _spot_requests(self, region: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        reply = self._client("ec2", region).describe_spot_instance_requests(
            SpotInstanceRequestIds=list(ids)
        )
        return {r["SpotInstanceRequestId"]: r for r in reply.get("SpotInstanceRequests", ())}

    def _mine(self) -> list[dict[str, Any]]:
        """The filters every lookup carries: corral's instances, of this cluster when set."""
        filters: list[dict[str, Any]] = [{"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]}]
        if self._cluster:
            filters.append({"Name": f"tag:{TAG_CLUSTER}", "Values": [self._cluster]})
        return filters

    def list(self, pool: str | None = None) -> list[Instance]:
        filters = self._mine()
        if pool is not None:
            filters.append({"Name": f"tag:{TAG_POOL}", "Values": [pool]})
        found: list[Instance] = []
        for region in sorted(self._regions):
            try:
                described = list(self._described(region, filters))
                spot_ids = [
                    d["SpotInstanceRequestId"] for d in described if d.get("SpotInstanceRequestId")
                ]
                requests = self._spot_requests(region, spot_ids)
            except Exception as exc:
                raise map_error(exc, f"listing instances in {region}") from exc
            for data in described:
                request = requests.get(str(data.get("SpotInstanceRequestId", "")))
                found.append(to_instance(data, region, request))
        return sorted(found, key=lambda i: (i.pool, i.node_name, i.provider_id))

    def terminate(self, provider_ids: Sequence[str]) -> None:
        wanted = sorted(set(provider_ids))
        if not wanted:
            return
        # Only ids that are corral's (and this cluster's): a stray id never ends an instance
        # someone else owns.
        filters = [*self._mine(), {"Name": "instance-id", "Values": wanted}]
        for region in sorted(self._regions):
            try:
                live = [
                    str(d["InstanceId"])
                    for d in self._described(region, filters)
                    if (d.get("State") or {}).get("Name") != "terminated"
                ]
                if live:
                    self._client("ec2", region).terminate_instances(InstanceIds=live)
            except Exception as exc:
                raise map_error(exc, f"terminating instances in {region}") from exc
