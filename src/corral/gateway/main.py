"""Running the gateway as a process: `python -m corral.gateway --port P --server URL`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
from pathlib import Path

from corral.gateway.routes import HttpRouteSource, RouteSource, StaticRouteSource
from corral.gateway.server import Gateway
from corral.wire.gateway import RouteTable

# On SIGTERM, open requests (streams too) get this long to finish before being cut.
DRAIN_ON_EXIT_S = 30.0


async def serve(source: RouteSource, host: str, port: int, gateway_id: str | None = None) -> None:
    """Run a gateway until SIGINT/SIGTERM."""
    gateway = Gateway(source, gateway_id=gateway_id)
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
    routes_file: Path | None = None,
    gateway_id: str | None = None,
) -> None:
    """Serve until signalled, following `server`'s route table (or a fixed `routes_file`).

    `token` authenticates to the control plane (default: $CORRAL_TOKEN).
    """
    source: RouteSource
    if routes_file is not None:
        source = StaticRouteSource(RouteTable.model_validate_json(routes_file.read_bytes()))
    elif server is not None:
        source = HttpRouteSource(server, token or os.environ.get("CORRAL_TOKEN"))
    else:
        raise ValueError("give the control plane's URL (server) or a routes file")
    try:
        import uvloop
    except ImportError:  # uvloop is Linux/macOS only; asyncio's own loop works, slower
        asyncio.run(serve(source, host, port, gateway_id))
    else:
        uvloop.run(serve(source, host, port, gateway_id))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m corral.gateway", description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--server", help="control plane URL (default: $CORRAL_SERVER)")
    parser.add_argument("--token", help="control plane token (default: $CORRAL_TOKEN)")
    parser.add_argument("--routes", type=Path, help="serve a fixed route table from a JSON file")
    parser.add_argument("--id", dest="gateway_id", help="this gateway's id in load reports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per long poll otherwise
    server = args.server or os.environ.get("CORRAL_SERVER")
    if server is None and args.routes is None:
        parser.error("give --server URL (or set CORRAL_SERVER), or --routes FILE")
    run_gateway(
        args.port,
        server,
        host=args.host,
        token=args.token,
        routes_file=args.routes,
        gateway_id=args.gateway_id,
    )
