"""`corral server`: run the control plane in this process."""

from __future__ import annotations

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
    uvicorn.Server(config).run()
