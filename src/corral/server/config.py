"""Server settings, from options and environment."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.secretfile import SecretFileError, read_secret_file
from corral.wire.artifacts import DEFAULT_MAX_TREE_BYTES

DEFAULT_PORT = 7390
ALLOW_LOCAL_POOLS_ENV = "CORRAL_ALLOW_LOCAL_POOLS"  # `corral up` sets it (cli/up.py)


def default_home() -> Path:
    # Expanded as the CLI's home is (client/config.py): both must name one directory.
    return Path(os.environ.get("CORRAL_HOME") or Path.home() / ".corral").expanduser()


class SettingError(ValueError):
    """A setting from the environment is unusable; the message names it."""


def _secret(env: MutableMapping[str, str], name: str) -> str | None:
    """`name`'s value, or the first line of the file `name`_FILE names (the way to pass it:
    a process's environment is readable by every process of its user). The variable is
    removed once read, so that nothing this process starts inherits it."""
    value = env.pop(name, None) or None
    path = env.get(f"{name}_FILE")
    if path:
        try:
            value = read_secret_file(Path(path), f"{name}_FILE")
        except SecretFileError as exc:
            raise SettingError(str(exc)) from None
    return value


def _positive_int(env: MutableMapping[str, str], name: str) -> int:
    value = env[name]
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise SettingError(f"{name}: expected a positive number of bytes, not {value!r}")
    return number


def _flag(env: MutableMapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingError(f"{name}: expected 1 or 0, not {env[name]!r}")


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    home: Path = field(default_factory=default_home)
    database_url: str | None = None  # default: CORRAL_DATABASE_URL, else SQLite under home
    heartbeat_interval_s: float = 1.0
    # A silent node is lost after this long; bounds failure detection (DESIGN: detect ≤ 10 s).
    node_lost_after_s: float = 8.0
    # A node whose connection closed, whose agent keeps a lifeline and whose lifeline is
    # silent too, is lost after this long: a dead host, not an agent restarting (its
    # lifeline speaks up within a second: agent/lifeline.py).
    node_closed_lost_after_s: float = 2.5
    scheduler_interval_s: float = 1.0
    # After a wake-up, the scheduler waits this long before it reads the store, so that
    # work arriving together is decided in one round (each round reads the fleet).
    scheduler_batch_s: float = 0.01
    # A server holding the controller lease that has not renewed it for this long (2 s
    # apart when alive) is taken to be dead, and a starting server takes over.
    lease_silent_s: float = 10.0
    bootstrap_admin_token: str | None = None
    bootstrap_join_token: str | None = None
    # Jobs that name no checkpoint_dir get <root>/<workspace>/<job>: a path every node sees
    # (a shared mount) or an object-store URI. Default: <home>/checkpoints (one machine).
    checkpoint_root: str | None = None
    # The gateway's base URL as users reach it (shown in `corral endpoint get`).
    gateway_public_url: str | None = None
    gateway_domain: str | None = None  # Host NAME.<domain> routes to endpoint NAME
    # Where uploaded working directories are kept: a directory, or s3://bucket/prefix
    # (boto3's credential chain; AWS_ENDPOINT_URL for an S3-compatible store).
    # Default: <home>/artifacts.
    artifact_store: str | None = None
    workdir_max_bytes: int = DEFAULT_MAX_TREE_BYTES  # one uploaded tree, unpacked
    # A directory of .whl files served as a package index (/v1/wheels/simple/) for nodes
    # that cannot reach PyPI; None: no index.
    wheelhouse: Path | None = None
    # The control plane's URL as new nodes reach it (their agents dial it): given to the
    # nodes pools launch. Default: http://<host>:<port>.
    public_url: str | None = None
    # The price catalog (providers/catalog.yaml's format); default: the packaged one.
    catalog: Path | None = None
    # The pool controller looks at pools, waiting work and idle nodes this often.
    pool_interval_s: float = 2.0
    # Pools on the `local` provider start agents on this machine as the server's own user,
    # unconfined: fit for a one-machine dev cluster (`corral up` sets it), not for one
    # shared by workspaces that must not read each other's files or the server's.
    allow_local_pools: bool = False

    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def resolved_checkpoint_root(self) -> str:
        return (
            self.checkpoint_root
            or os.environ.get("CORRAL_CHECKPOINT_ROOT")
            or str(self.home / "checkpoints")
        )

    def resolved_artifact_store(self) -> str:
        return self.artifact_store or str(self.home / "artifacts")

    def resolved_database_url(self) -> str:
        url = self.database_url or os.environ.get("CORRAL_DATABASE_URL")
        return url or f"sqlite:///{self.home / 'corral.db'}"

    @classmethod
    def from_env(cls, **overrides: object) -> ServerOptions:
        env = os.environ
        values: dict[str, object] = {
            "bootstrap_admin_token": _secret(env, "CORRAL_BOOTSTRAP_ADMIN_TOKEN"),
            "bootstrap_join_token": _secret(env, "CORRAL_BOOTSTRAP_JOIN_TOKEN"),
        }
        if "CORRAL_NODE_LOST_AFTER" in env:
            values["node_lost_after_s"] = float(env["CORRAL_NODE_LOST_AFTER"])
        values["gateway_public_url"] = env.get("CORRAL_GATEWAY_PUBLIC_URL") or None
        values["gateway_domain"] = env.get("CORRAL_GATEWAY_DOMAIN") or None
        if "CORRAL_NODE_CLOSED_LOST_AFTER" in env:
            values["node_closed_lost_after_s"] = float(env["CORRAL_NODE_CLOSED_LOST_AFTER"])
        values["artifact_store"] = env.get("CORRAL_ARTIFACT_STORE") or None
        if env.get("CORRAL_WORKDIR_MAX_BYTES"):
            values["workdir_max_bytes"] = _positive_int(env, "CORRAL_WORKDIR_MAX_BYTES")
        if env.get("CORRAL_WHEELHOUSE"):
            values["wheelhouse"] = Path(env["CORRAL_WHEELHOUSE"])
        values["public_url"] = env.get("CORRAL_PUBLIC_URL") or None
        if env.get("CORRAL_CATALOG"):
            values["catalog"] = Path(env["CORRAL_CATALOG"])
        values["allow_local_pools"] = _flag(env, ALLOW_LOCAL_POOLS_ENV)
        if "CORRAL_HEARTBEAT_INTERVAL" in env:
            values["heartbeat_interval_s"] = float(env["CORRAL_HEARTBEAT_INTERVAL"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
