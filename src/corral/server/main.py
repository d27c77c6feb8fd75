"""`corral server`: run the control plane in this process."""

from __future__ import annotations

import gc
import logging

from corral.server.config import ServerOptions


def serve(options: ServerOptions) -> None:
    import uvicorn

    from corral.server.app import create_app

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    options.home.mkdir(parents=True, exist_ok=True)
    config = uvicorn.Config(
        create_app(options),
        host=options.host,
        port=options.port,
        log_level="warning",
        lifespan="on",
        ws_ping_interval=10.0,
        ws_ping_timeout=10.0,
        # The agent channel carries small JSON messages, a few per node a second at fleet
        # scale: compressing them would cost the control plane more CPU than it saves.
        ws_per_message_deflate=False,
    )
    # What is alive now (modules, the app, pydantic and SQLAlchemy's compiled machinery)
    # lives as long as the server: keep the cyclic GC from walking it again and again.
    # And collect the youngest generation less often: a busy control plane allocates
    # many short-lived objects, and each collection pauses every request.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    uvicorn.Server(config).run()
