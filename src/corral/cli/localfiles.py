"""What `corral up` keeps in $CORRAL_HOME: up.json (what runs) and the tokens it reuses."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

UP_FILE = "up.json"
ADMIN_PREFIX = "crl_"
JOIN_PREFIX = "crj_"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class UpState:
    """What `corral down` needs to find and stop a plane: up.json."""

    host: str
    port: int
    server: str
    pids: dict[str, int]
    started_at: float
    detached: bool
    supervisor_pid: int | None = None
    # Set by `corral down` before it stops the children, so a foreground `corral up`
    # watching them knows their exit is wanted.
    stopping: bool = False


def up_path(home: Path) -> Path:
    return home / UP_FILE


def read_up(home: Path) -> UpState | None:
    try:
        data = json.loads(up_path(home).read_text())
        pids = {str(k): int(v) for k, v in data["pids"].items()}
        return UpState(
            host=str(data["host"]),
            port=int(data["port"]),
            server=str(data["server"]),
            pids=pids,
            started_at=float(data["started_at"]),
            detached=bool(data.get("detached", False)),
            supervisor_pid=data.get("supervisor_pid"),
            stopping=bool(data.get("stopping", False)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # A file we cannot read describes nothing we can stop.
        return None


def write_up(home: Path, st: UpState) -> None:
    from corral.client.config import write_private_json

    write_private_json(up_path(home), asdict(st))


def remove_up(home: Path) -> None:
    up_path(home).unlink(missing_ok=True)


def is_loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "") in LOOPBACK


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Tokens:
    admin: str
    join: str
    reused_admin: bool


def choose_tokens(home: Path) -> Tokens:
    """Keep the admin token a previous `corral up` of this home saved in config.json (the
    server seeds tokens only if absent, so it still works); otherwise make a new one."""
    from corral.client.config import read_config

    saved = read_config(home)
    token, server = saved.get("token"), saved.get("server")
    if token and server and is_loopback_url(server):
        return Tokens(admin=token, join=new_secret(JOIN_PREFIX), reused_admin=True)
    return Tokens(admin=new_secret(ADMIN_PREFIX), join=new_secret(JOIN_PREFIX), reused_admin=False)


def keep_remote_config(home: Path) -> Path | None:
    """Before `corral up` points config.json here, save one that points elsewhere."""
    from corral.client.config import CONFIG_FILE, read_config, write_private_json

    saved = read_config(home)
    server = saved.get("server")
    if not server or is_loopback_url(server):
        return None
    return write_private_json(home / f"{CONFIG_FILE}.bak", saved)
