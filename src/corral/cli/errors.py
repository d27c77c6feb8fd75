"""Turning any failure a user can cause into one readable line and an exit code.

Exit codes: 0 success, 1 the server or the system said no, 2 bad input (flags, spec files,
a spec the server rejected), 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Any

from corral.cli.output import CliError, error_line

BAD_INPUT = 2
FAILED = 1

_TOKEN_HINT = "run `corral up` (it saves a token) or set CORRAL_TOKEN"


def _loaded(module: str, name: str) -> Any:
    """A class from a module only if that module is already imported.

    An exception of that class can only exist if its module was imported, so this keeps the
    error path from importing pydantic or httpx just to run an isinstance check.
    """
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def report(exc: BaseException) -> int | None:
    """Print `exc` for a person and return the exit code; None if it is not ours (a bug)."""
    if isinstance(exc, CliError):
        error_line(exc.message, exc.hint)
        return exc.code

    spec_error = _loaded("corral.spec.errors", "SpecError")
    if spec_error is not None and isinstance(exc, spec_error):
        for field in exc.errors:
            where = f"{exc.source}: " if exc.source else ""
            error_line(f"{where}{field}")
        return BAD_INPUT

    api_error = _loaded("corral.client.errors", "ApiError")
    if api_error is not None and isinstance(exc, api_error):
        return _report_api(exc)

    corral_error = _loaded("corral.client.errors", "CorralError")
    if corral_error is not None and isinstance(exc, corral_error):
        error_line(str(exc))
        return FAILED
    return None


def _report_api(exc: Any) -> int:
    status: int = exc.status
    if status == 401:
        # The SDK's message names the server, the token's source and why that server.
        error_line(exc.message, exc.hint or _TOKEN_HINT)
        return FAILED
    if status in (400, 422):
        if exc.fields:
            for field in exc.fields:
                error_line(str(field))
        else:
            error_line(exc.message)
        return BAD_INPUT
    hint = None
    if status == 403:
        hint = "ask a cluster admin for a token with that role or workspace (`corral token create`)"
    error_line(exc.message, hint)
    return FAILED
