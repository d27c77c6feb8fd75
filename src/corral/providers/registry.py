"""Which Provider serves a pool's `provider:` name. Cloud SDKs are imported only when a
pool on that cloud is acted on, so a server without boto3 still serves local pools."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.providers.base import LaunchErrorKind, Provider, ProviderError
from corral.providers.catalog import Catalog

# Providers a pool may name. `ssh` pools are static (hosts added with `corral node add`);
# `sim` is the simulator's and never served by a control plane.
KNOWN = ("aws", "local", "ssh")
STATIC = frozenset({"ssh"})


@dataclass(frozen=True)
class ProviderSettings:
    home: Path  # the server's home: local nodes live under <home>/local-nodes
    catalog: Catalog
    aws_endpoint_url: str | None = None  # an EC2-compatible endpoint (moto in tests)
    # Where `list` and `terminate` look for aws instances (the aws pools' regions): after
    # a restart, instances launched before it are found there.
    aws_regions: tuple[str, ...] = ()
    # Whether local pools may start agents (server option allow_local_pools).
    allow_local: bool = False
    # The control plane's id (server/services/cluster.py): cloud instances are tagged with
    # it and only those are listed or terminated, so control planes sharing an account
    # never end each other's. Empty: no scoping (a provider used outside a control plane).
    cluster: str = ""


def is_static(name: str) -> bool:
    return name in STATIC


def provider_for(name: str, settings: ProviderSettings) -> Provider:
    """The provider called `name`. Raises ProviderError (invalid) for one this server
    cannot serve."""
    if name == "local":
        from corral.providers.local import LocalProvider

        return LocalProvider(
            settings.home / "local-nodes", settings.catalog, launch_allowed=settings.allow_local
        )
    if name == "aws":
        try:
            from corral.providers.aws import AwsProvider
        except ImportError as exc:
            raise ProviderError(
                LaunchErrorKind.INVALID,
                f"aws: the AWS provider cannot be loaded ({exc}); install corral with boto3",
            ) from exc
        return AwsProvider(
            endpoint_url=settings.aws_endpoint_url,
            regions=settings.aws_regions,
            cluster=settings.cluster,
        )
    if name in STATIC:
        raise ProviderError(
            LaunchErrorKind.INVALID,
            f"{name} pools are static: add hosts with `corral node add`",
        )
    raise ProviderError(
        LaunchErrorKind.INVALID,
        f"unknown provider {name!r}; expected one of: {', '.join(KNOWN)}",
    )
