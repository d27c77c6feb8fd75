"""Running the gateway as a process: `python -m corral.gateway --port P --server URL`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path

from corral.gateway.adminauth import AdminAuth
from corral.gateway.forwarding import Network, parse_trusted
from corral.gateway.limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_COUNT,
    DEFAULT_TIMEOUT_S,
    HeadLimits,
)
from corral.gateway.routes import HttpRouteSource, RouteSource, StaticRouteSource
from corral.gateway.server import Gateway
from corral.gateway.tokenfile import TokenFileError, read_token_file, resolve_token
from corral.loop import run_loop
from corral.wire.gateway import RouteTable

# On SIGTERM, open requests (streams too) get this long to finish before being cut.
DRAIN_ON_EXIT_S = 30.0


@dataclass(frozen=True)
class EdgeOptions:
    """How the gateway treats clients: head limits, trusted proxies, who reads /_corral/."""

    limits: HeadLimits = field(default_factory=HeadLimits)
    trusted_proxies: tuple[Network, ...] = ()
    metrics_token_file: Path | None = None


async def serve(
    source: RouteSource,
    host: str,
    port: int,
    gateway_id: str | None = None,
    *,
    admin_auth: AdminAuth | None = None,
    edge: EdgeOptions | None = None,
) -> None:
    """Run a gateway until SIGINT/SIGTERM."""
    edge = edge or EdgeOptions()
    gateway = Gateway(
        source,
        gateway_id=gateway_id,
        admin_auth=admin_auth,
        limits=edge.limits,
        trusted_proxies=edge.trusted_proxies,
    )
    bound = await gateway.start(host, port)
    # Everything built so far lives as long as the process: keep it out of the collector's
    # full passes, whose pauses would otherwise land on requests' tail latency.
    gc.collect()
    gc.freeze()
    logging.getLogger("corral.gateway").info("gateway listening on %s:%d", host, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        await gateway.drain(DRAIN_ON_EXIT_S)
    finally:
        await gateway.stop()
        if isinstance(source, HttpRouteSource):
            await source.aclose()


def run_gateway(
    port: int,
    server: str | None = None,
    *,
    host: str = "0.0.0.0",
    token: str | None = None,
    token_file: Path | None = None,
    routes_file: Path | None = None,
    gateway_id: str | None = None,
    edge: EdgeOptions | None = None,
) -> None:
    """Serve until signalled, following `server`'s route table (or a fixed `routes_file`).

    `token` (else `token_file`, else $CORRAL_TOKEN_FILE's file, else $CORRAL_TOKEN)
    authenticates to the control plane; it, or the token in `edge.metrics_token_file`,
    also opens /_corral/load and /_corral/metrics. A bad token file raises TokenFileError
    before anything starts.
    """
    run_loop(prepare(port, server, host, token, token_file, routes_file, gateway_id, edge))


def prepare(
    port: int,
    server: str | None,
    host: str,
    token: str | None,
    token_file: Path | None,
    routes_file: Path | None,
    gateway_id: str | None,
    edge: EdgeOptions | None,
) -> Coroutine[object, object, None]:
    """Everything that can be refused (tokens, routes), checked; the gateway, to be run."""
    edge = edge or EdgeOptions()
    secret = resolve_token(token, token_file)
    metrics = read_token_file(edge.metrics_token_file) if edge.metrics_token_file else None
    source: RouteSource
    if routes_file is not None:
        source = StaticRouteSource(RouteTable.model_validate_json(routes_file.read_bytes()))
    elif server is not None:
        source = HttpRouteSource(server, secret)
    else:
        raise ValueError("give the control plane's URL (server) or a routes file")
    return serve(source, host, port, gateway_id, admin_auth=AdminAuth([secret, metrics]), edge=edge)


def main(argv: list[str] | None = None) -> None:
    # Nothing this process writes is for other users' eyes.
    os.umask(0o077)
    parser = argparse.ArgumentParser(prog="python -m corral.gateway", description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--server", help="control plane URL (default: $CORRAL_SERVER)")
    parser.add_argument(
        "--token", help="control plane token (prefer --token-file: `ps` shows this flag)"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file (mode 0600) holding the control plane token (default: $CORRAL_TOKEN_FILE, "
        "else $CORRAL_TOKEN)",
    )
    parser.add_argument("--routes", type=Path, help="serve a fixed route table from a JSON file")
    parser.add_argument("--id", dest="gateway_id", help="this gateway's id in load reports")
    add_edge_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per long poll otherwise
    server = args.server or os.environ.get("CORRAL_SERVER")
    if server is None and args.routes is None:
        parser.error("give --server URL (or set CORRAL_SERVER), or --routes FILE")
    try:
        edge = EdgeOptions(
            HeadLimits(args.max_header_bytes, args.max_headers, args.head_timeout),
            parse_trusted(args.trusted_proxies),
            args.metrics_token_file,
        )
        running = prepare(
            args.port,
            server,
            args.host,
            args.token,
            args.token_file,
            args.routes,
            args.gateway_id,
            edge,
        )
    except (TokenFileError, ValueError) as exc:
        print(f"corral gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    run_loop(running)


def add_edge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-header-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help="largest request head accepted (431 above)",
    )
    parser.add_argument(
        "--max-headers",
        type=int,
        default=DEFAULT_MAX_COUNT,
        help="most header fields in one request (431 above)",
    )
    parser.add_argument(
        "--head-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds a client may take to send a request head (408 after)",
    )
    parser.add_argument(
        "--trusted-proxies",
        default="",
        help="CIDR,... of proxies in front whose X-Forwarded-For is kept (default: none)",
    )
    parser.add_argument(
        "--metrics-token-file",
        type=Path,
        help="file (mode 0600) with a token that may read /_corral/load and /_corral/metrics",
    )
