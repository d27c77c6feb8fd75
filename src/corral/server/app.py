"""The FastAPI application and its lifespan: migrate, bootstrap, run the controllers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from corral import __version__
from corral.server.api import agent, endpoints, errors, identity, jobs, nodes, quotas
from corral.server.clock import Clock, SystemClock
from corral.server.config import ServerOptions
from corral.server.controllers import endpoints as endpoint_controller
from corral.server.controllers import liveness, scheduler
from corral.server.hub import AgentHub
from corral.server.runtime import ControlPlane
from corral.server.services.identity import bootstrap
from corral.server.store.db import Store
from corral.server.store.migrate import upgrade
from corral.server.store.tables import Node

log = logging.getLogger("corral.server")


def _reset_connections(store: Store) -> None:
    # No agent is connected to a process that has just started, whatever the store says.
    with store.transaction() as session:
        session.query(Node).filter(Node.connected.is_(True)).update({"connected": False})


def create_app(options: ServerOptions, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(options.resolved_database_url())
        upgrade(store.engine)
        bootstrap(
            store,
            clock.now(),
            options.home,
            options.bootstrap_admin_token,
            options.bootstrap_join_token,
        )
        _reset_connections(store)
        cp = ControlPlane(options, store, clock, AgentHub(store), started_at=clock.now())
        cp.loop = asyncio.get_running_loop()
        cp.hub.bind(cp.loop)
        app.state.cp = cp
        tasks = [
            asyncio.create_task(scheduler.run(cp), name="scheduler"),
            asyncio.create_task(liveness.run(cp), name="liveness"),
            asyncio.create_task(endpoint_controller.run(cp), name="endpoints"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await cp.hub.close()
            store.close()

    app = FastAPI(title="corral", version=__version__, lifespan=lifespan)
    errors.install(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, object]:
        return {"ok": True, "version": __version__}

    for module in (jobs, endpoints, nodes, identity, quotas, agent):
        app.include_router(module.router)
    app.include_router(endpoints.gateway_router)
    return app
