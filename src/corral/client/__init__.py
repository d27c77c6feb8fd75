"""The corral Python SDK.

from corral.client import Client
with Client.from_config() as c:
    job = c.submit_job(JobSpec(name="hello", command="echo hi"))
    print(c.wait_job(job.name).state)
"""

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
