"""The agent's settings, as the CLI (`corral agent`, `corral up`) hands them over."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from corral.agent.gpu.fake import parse_fake_gpus
from corral.agent.sandbox.modes import DEFAULT_UID_BASE, IsolationMode


class AgentConfigError(ValueError):
    """A setting is wrong; the message names it and says what was expected."""


@dataclass(frozen=True)
class AgentConfig:
    server: str  # http://host:port
    state_dir: Path
    join_token: str | None = None
    name: str | None = None  # node name; default hostname
    fake_gpus: str | None = None  # "H100:8"
    address: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    stop_replicas_on_exit: bool = False
    stop_grace_s: float = 5.0
    progress_poll_s: float = 1.0  # how often replicas' progress files are read
    ports_poll_s: float = 2.0  # how often the node's listening ports are looked at
    # How often the GPU and node health checks run (Xids are seen at once, between them).
    health_interval_s: float = 2.0
    # How replicas are confined (sandbox/README.md): auto = when the agent can.
    isolation: IsolationMode = IsolationMode.AUTO
    uid_base: int = DEFAULT_UID_BASE
    # Workspace volumes and pods' working directories (agent/volumes.py); None: <state>/volumes.
    # On a fleet: a shared mount at the same path on every node.
    volume_root: Path | None = None
    # Watch for the cloud's notice that it takes the machine back (agent/interruption.py):
    # None, or "aws" (EC2 spot, through the instance metadata service at imds_url).
    interruption_notices: str | None = None
    imds_url: str = "http://169.254.169.254"
    interruption_poll_s: float = 5.0

    def volumes(self) -> Path:
        return self.volume_root or self.state_dir / "volumes"


def check_config(config: AgentConfig) -> None:
    """Raise AgentConfigError for a setting the agent cannot run with."""
    parts = urlsplit(config.server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AgentConfigError(
            f"server {config.server!r}: expected an http:// or https:// URL, "
            "e.g. http://10.0.0.5:7390"
        )
    if config.fake_gpus is not None:
        try:
            parse_fake_gpus(config.fake_gpus)
        except ValueError as exc:
            raise AgentConfigError(f"fake GPUs: {exc}") from exc
    if config.name is not None and not config.name.strip():
        raise AgentConfigError("name: must not be empty")
    if config.join_token is not None and not config.join_token.strip():
        raise AgentConfigError("join token: must not be empty")
    if not config.stop_grace_s >= 0:
        raise AgentConfigError(f"stop grace: {config.stop_grace_s} is not >= 0 seconds")
    if not 0 < config.uid_base <= 4_000_000_000:
        raise AgentConfigError(f"workload uid base: {config.uid_base} is not in 1..4000000000")
    if not config.progress_poll_s > 0:
        raise AgentConfigError(f"progress poll: {config.progress_poll_s} is not > 0 seconds")
    if not 0.05 <= config.health_interval_s <= 3600:
        raise AgentConfigError(
            f"health interval: {config.health_interval_s} is not between 0.05 and 3600 seconds"
        )
    if config.volume_root is not None and not config.volume_root.is_absolute():
        raise AgentConfigError(f"volume root: {config.volume_root} is not an absolute path")
    if config.interruption_notices not in (None, "aws"):
        raise AgentConfigError(
            f"interruption notices: {config.interruption_notices!r}: expected aws (EC2 spot)"
        )
    imds = urlsplit(config.imds_url)
    if imds.scheme not in ("http", "https") or not imds.hostname:
        raise AgentConfigError(
            f"metadata service {config.imds_url!r}: expected an http:// URL, "
            "e.g. http://169.254.169.254"
        )
    if not config.interruption_poll_s > 0:
        raise AgentConfigError(
            f"interruption poll: {config.interruption_poll_s} is not > 0 seconds"
        )
    if not config.ports_poll_s > 0:
        raise AgentConfigError(f"ports poll: {config.ports_poll_s} is not > 0 seconds")
