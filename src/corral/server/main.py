"""`corral server`: run the control plane in this process."""

from __future__ import annotations

import gc
import logging
import os
from typing import TYPE_CHECKING, Any

from corral.server.config import ServerOptions

if TYPE_CHECKING:
    import uvicorn

# The request line and headers of one request, together. Past it the parser answers 400
# and closes the connection (the body has its own bound: app.MAX_BODY_BYTES).
MAX_HEAD_BYTES = 32 * 1024
STOP_REQUESTS_S = 5


def stopping_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, telling the app when it begins to stop: uvicorn waits for the
    requests in flight before the lifespan's shutdown, so a long poll held for a minute
    would hold the stop for a minute (the app's `cp.stopping` makes it answer at once)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            cp = getattr(getattr(config.app, "state", None), "cp", None)
            if cp is not None:
                cp.stopping.set()
            await super().shutdown(sockets)

    return Server(config)


def uvicorn_config(app: Any, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """How the API is served: the bounds every deployment needs, whatever else is set."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # h11, not httptools: httptools buffers a header of any size (a 50 MB one was
        # accepted); h11 bounds the head and refuses conflicting Content-Length and
        # Transfer-Encoding (request smuggling). It costs some CPU per request.
        http="h11",
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        # An idle keep-alive connection is closed after this long. A client that trickles
        # a head byte by byte holds one socket and at most MAX_HEAD_BYTES, never a worker:
        # the server is one event loop, and a request reaches the app only when complete.
        timeout_keep_alive=5,
        ws_ping_interval=10.0,
        ws_ping_timeout=10.0,
        # The agent channel carries small JSON messages, a few per node a second at fleet
        # scale: compressing them would cost the control plane more CPU than it saves.
        ws_per_message_deflate=False,
        # On SIGTERM, requests still running after this long are cancelled: a stop never
        # waits for a client (the lifespan, which stops the controllers, runs after).
        timeout_graceful_shutdown=STOP_REQUESTS_S,
        **extra,
    )


def serve(options: ServerOptions) -> None:

    from corral.server.app import create_app
    from corral.server.clock import SystemClock
    from corral.server.lease import Lease
    from corral.server.store.db import Store
    from corral.server.store.migrate import upgrade

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The database (specs with their env), logs and secrets are this user's alone.
    os.umask(0o077)
    options.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    options.home.chmod(0o700)
    # The controller lease first, here: a second server on a database another one runs
    # stops with one line (LeaseHeld, a SettingError), not a traceback from the lifespan.
    store = Store(options.resolved_database_url())
    upgrade(store.engine)
    lease = Lease(store)
    try:
        lease.acquire(SystemClock().now, options.lease_silent_s)
    except BaseException:
        store.close()
        raise
    config = uvicorn_config(
        create_app(options, lease=lease),
        options.host,
        options.port,
        log_level="warning",
        lifespan="on",
    )
    # What is alive now (modules, the app, pydantic and SQLAlchemy's compiled machinery)
    # lives as long as the server: keep the cyclic GC from walking it again and again.
    # And collect the youngest generation less often: a busy control plane allocates
    # many short-lived objects, and each collection pauses every request.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    stopping_server(config).run()
