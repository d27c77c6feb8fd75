"""The corral SDK: a small synchronous client over the REST API."""

from __future__ import annotations

from pathlib import Path

import httpx

from corral.client.cluster import ClusterApi
from corral.client.config import resolve_settings
from corral.client.endpoints import EndpointsApi
from corral.client.jobs import JobsApi
from corral.client.pods import PodsApi
from corral.client.pools import PoolsApi


class Client(ClusterApi, JobsApi, EndpointsApi, PodsApi, PoolsApi):
    """One server, one token, one workspace; no global state.

    `transport` replaces the network (e.g. `httpx.MockTransport` in tests). Close it, or
    use it as a context manager, to release its connections.
    """

    @classmethod
    def from_config(
        cls,
        home: Path | None = None,
        *,
        server: str | None = None,
        token: str | None = None,
        workspace: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> Client:
        """A client set up like the CLI: `$CORRAL_HOME/config.json`, then CORRAL_* variables,
        then these arguments."""
        s = resolve_settings(home, server=server, token=token, workspace=workspace)
        return cls(
            s.server, s.token, s.workspace, transport=transport, timeout=timeout, origin=s.origin
        )
