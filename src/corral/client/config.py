"""Where the SDK and CLI find the server: `$CORRAL_HOME/config.json`, then the environment.

Precedence, lowest first: built-in defaults, config.json, CORRAL_SERVER / CORRAL_TOKEN /
CORRAL_WORKSPACE, then explicit arguments (the CLI's --server and --workspace).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.client.errors import ConfigError, Unauthorized

DEFAULT_SERVER = "http://127.0.0.1:7390"
DEFAULT_WORKSPACE = "default"
CONFIG_FILE = "config.json"
_KEYS = ("server", "token", "workspace")
_DEFAULT_SOURCE = "the default"


def corral_home(env: Mapping[str, str] | None = None) -> Path:
    """`$CORRAL_HOME`, else `~/.corral`."""
    env = os.environ if env is None else env
    value = env.get("CORRAL_HOME")
    return Path(value).expanduser() if value else Path.home() / ".corral"


@dataclass(frozen=True)
class Origin:
    """Where the server address and the token came from, to say so when they are wrong;
    None: given directly (an SDK caller's arguments)."""

    server: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a client needs to reach one server as one identity.

    `workspace` None: the token's own workspace (the client asks the server which).
    """

    server: str
    token: str | None
    workspace: str | None
    origin: Origin = field(default_factory=Origin)

    def __repr__(self) -> str:
        # Keeps the secret out of logs and tracebacks.
        token = "<set>" if self.token else None
        return f"Settings(server={self.server!r}, token={token}, workspace={self.workspace!r})"


def read_config(home: Path) -> dict[str, str]:
    """The saved {server, token, workspace}; {} when there is no config.json."""
    path = home / CONFIG_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON (line {exc.lineno}): fix or delete it"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object with server, token and workspace")
    return {k: v for k, v in data.items() if k in _KEYS and isinstance(v, str) and v}


def write_config(home: Path, server: str, token: str | None, workspace: str) -> Path:
    """Save the config atomically, readable by its owner only (it holds a token)."""
    data: dict[str, str] = {"server": server, "workspace": workspace}
    if token:
        data["token"] = token
    return write_private_json(home / CONFIG_FILE, data)


def write_private_json(path: Path, data: object) -> Path:
    """Write JSON with mode 600 via a temporary file, so no reader sees it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 from the start: the secret is never world-readable.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve_settings(
    home: Path | None = None,
    *,
    server: str | None = None,
    token: str | None = None,
    workspace: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    home = corral_home(env) if home is None else home
    saved = read_config(home)
    config = f"{home / CONFIG_FILE}"
    server_from, server = _first(
        ("--server", server),
        ("CORRAL_SERVER", env.get("CORRAL_SERVER")),
        (config, saved.get("server")),
        (_DEFAULT_SOURCE, DEFAULT_SERVER),
    )
    token_from, token = _first(
        (None, token),
        ("CORRAL_TOKEN", env.get("CORRAL_TOKEN")),
        (config, saved.get("token")),
    )
    return Settings(
        server=_normalize_server(server or DEFAULT_SERVER),
        token=token,
        workspace=workspace or env.get("CORRAL_WORKSPACE") or saved.get("workspace") or None,
        origin=Origin(
            server=server_from,
            # With no token, say where one was looked for.
            token=token_from if token else f"CORRAL_TOKEN or {config}",
        ),
    )


def _first(*candidates: tuple[str | None, str | None]) -> tuple[str | None, str | None]:
    """The first (source, value) with a value."""
    for source, value in candidates:
        if value:
            return source, value
    return None, None


def described(server: str, origin: Origin) -> str:
    """`server`, and why that one: where its address came from."""
    if origin.server == _DEFAULT_SOURCE:
        return f"{server} (the default: no --server, CORRAL_SERVER or config.json names one)"
    return f"{server} (from {origin.server})" if origin.server else server


def rejected(error: Unauthorized, server: str, origin: Origin, *, token_sent: bool) -> Unauthorized:
    """`error` (a 401) reworded to say which server was asked, with which token, and why
    that server: an empty CORRAL_HOME silently means another corral on the default port."""
    where = described(server, origin)
    if token_sent:
        token = f"the token from {origin.token}" if origin.token else "the token"
        said = f"the corral server at {where} rejected {token}"
    else:
        searched = f" in {origin.token}" if origin.token else ""
        said = f"the corral server at {where} needs a token, and none was found{searched}"
    hint = "run `corral up` (it saves a token), set CORRAL_TOKEN, or point --server elsewhere"
    return Unauthorized(error.status, error.code, f"{said}: {error.message}", hint=hint)


def _normalize_server(url: str) -> str:
    url = url.strip().rstrip("/")
    # "localhost:7390" is what people type; httpx needs a scheme.
    return url if "://" in url else f"http://{url}"
