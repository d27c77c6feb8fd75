"""The decorators a service class uses; they only mark methods, nothing runs at import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
F = TypeVar("F", bound=Callable[..., Any])

_HANDLER = "__corral_handler__"
_SETUP = "__corral_setup__"


@dataclass(frozen=True)
class HandlerSpec:
    path: str
    method: Method


def handler(path: str, method: Method = "POST") -> Callable[[F], F]:
    """Serve this method at `path`.

    Its one parameter, if any, is the request body, validated against its annotation (a
    pydantic model gives field-level 422 errors). It may return a pydantic model, a dict or
    list (sent as JSON), or an iterator/async iterator (streamed as server-sent events, one
    `data:` line per item). Plain `def` handlers run in a thread pool, so a model call does
    not block the server; `async def` ones run on the event loop.
    """
    if not path.startswith("/"):
        raise ValueError(f"handler path {path!r} must start with '/'")

    def mark(fn: F) -> F:
        setattr(fn, _HANDLER, HandlerSpec(path, method))
        return fn

    return mark


def setup(fn: F) -> F:
    """Run this method once before serving (load the model); the service is ready after."""
    setattr(fn, _SETUP, True)
    return fn


def handler_spec(fn: object) -> HandlerSpec | None:
    spec = getattr(fn, _HANDLER, None)
    return spec if isinstance(spec, HandlerSpec) else None


def is_setup(fn: object) -> bool:
    return getattr(fn, _SETUP, False) is True
