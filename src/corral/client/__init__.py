"""The corral Python SDK.

from corral.client import Client
with Client.from_config() as c:
    job = c.submit_job(JobSpec(name="hello", command="echo hi"))
    print(c.wait_job(job.name).state)

Names are loaded on first use (PEP 562): `corral pod proxy`, which every `ssh` to a pod
starts, imports corral.client.relay and must not pay for the whole SDK (httpx, pydantic
views) on each connection.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.client.client import Client
    from corral.client.config import (
        DEFAULT_SERVER,
        DEFAULT_WORKSPACE,
        Settings,
        corral_home,
        read_config,
        resolve_settings,
        write_config,
    )
    from corral.client.errors import (
        ApiError,
        BadRequest,
        ConfigError,
        Conflict,
        ConnectionFailed,
        CorralError,
        FieldProblem,
        Forbidden,
        NotCorralApi,
        NotFound,
        ProtocolError,
        ServerFailure,
        ServerUnreachable,
        Unauthorized,
    )

__all__ = [
    "DEFAULT_SERVER",
    "DEFAULT_WORKSPACE",
    "ApiError",
    "BadRequest",
    "Client",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "CorralError",
    "FieldProblem",
    "Forbidden",
    "NotCorralApi",
    "NotFound",
    "ProtocolError",
    "ServerFailure",
    "ServerUnreachable",
    "Settings",
    "Unauthorized",
    "corral_home",
    "read_config",
    "resolve_settings",
    "write_config",
]

_HOMES = {
    "Client": "corral.client.client",
    **dict.fromkeys(
        [
            "DEFAULT_SERVER",
            "DEFAULT_WORKSPACE",
            "Settings",
            "corral_home",
            "read_config",
            "resolve_settings",
            "write_config",
        ],
        "corral.client.config",
    ),
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'corral.client' has no attribute {name!r}")
    module = importlib.import_module(_HOMES.get(name, "corral.client.errors"))
    value = getattr(module, name)
    globals()[name] = value
    return value
