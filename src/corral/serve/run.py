"""Load `file.py:Class` (or `package.module:Class`) and serve it with uvicorn."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path

import uvicorn

from corral.serve.app import build_app


class TargetError(ValueError):
    """The `app.py:Class` target could not be loaded; the message says why."""


def load_target(target: str) -> object:
    """Import `target` ("app.py:Embedder" or "pkg.mod:Embedder") and instantiate the class."""
    module_ref, sep, attr = target.rpartition(":")
    if not sep or not module_ref or not attr:
        raise TargetError(f"{target!r}: expected FILE.py:Class or package.module:Class")
    if module_ref.endswith(".py") or "/" in module_ref:
        path = Path(module_ref).resolve()
        if not path.is_file():
            raise TargetError(f"{target!r}: no such file {path}")
        # The app's own directory goes first on sys.path so its sibling modules import.
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise TargetError(f"{target!r}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as exc:
            raise TargetError(f"{target!r}: cannot import {module_ref}: {exc}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise TargetError(f"{target!r}: {module_ref} has no attribute {attr!r}")
    if not isinstance(cls, type):
        raise TargetError(f"{target!r}: {attr} is not a class")
    try:
        return cls()
    except TypeError as exc:
        raise TargetError(f"{target!r}: {attr}() must take no arguments: {exc}") from exc


def _log_to_stderr() -> None:
    """corral.serve's own lines (ready, failed, requests) beside uvicorn's, in its format."""
    logger = logging.getLogger("corral.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def serve_app(target: str, host: str, port: int, *, readiness_path: str | None = None) -> None:
    """Serve `target` until interrupted; exits with status 1 if its setup hook fails.
    `readiness_path`, when given, wins over the class's own: it is what the node probes."""
    service = load_target(target)
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop(exc: BaseException) -> None:
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    app = build_app(service, on_setup_failed=stop, readiness_path=readiness_path)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",  # uvloop and httptools where installed
        http="auto",
        log_level="info",
        # Longer than the gateway's idle reuse window, so a pooled connection is not
        # closed under a request the gateway is just sending.
        timeout_keep_alive=30,
        # corral.serve logs requests itself (serve/access.py): the client the gateway names
        # (from trusted peers only), and readiness probes only when their answer changes.
        access_log=False,
        proxy_headers=False,
    )
    _log_to_stderr()
    server = uvicorn.Server(config)
    server.run()
    if failed:
        raise SystemExit(1)
