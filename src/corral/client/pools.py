"""The SDK's calls about node pools and what GPUs cost."""

from __future__ import annotations

from urllib.parse import quote

from corral.client.http import Http
from corral.spec.pool import NodePoolSpec, PoolScale
from corral.wire.pools import PoolList, PoolView, UsageList, WorkspaceUsage


def _pool(name: str) -> str:
    return f"/v1/pools/{quote(name, safe='')}"


class PoolsApi(Http):
    def create_pool(self, spec: NodePoolSpec) -> PoolView:
        """A new node pool (cluster admins); it grows to `min` at once."""
        return self._send(PoolView, "POST", "/v1/pools", spec.model_dump(mode="json"))

    def list_pools(self) -> list[PoolView]:
        return self._get(PoolList, "/v1/pools").pools

    def get_pool(self, name: str) -> PoolView:
        """The pool with its nodes and its latest events (why it grew, shrank, rests)."""
        return self._get(PoolView, _pool(name))

    def scale_pool(
        self,
        name: str,
        min_nodes: int | None,
        max_nodes: int | None,
        spare_nodes: int | None = None,
    ) -> PoolView:
        body = PoolScale(min=min_nodes, max=max_nodes, spare=spare_nodes).model_dump(
            mode="json", exclude_none=True
        )
        return self._send(PoolView, "PATCH", _pool(name), body)

    def delete_pool(self, name: str, force: bool = False) -> bool:
        """True when it is gone; False when its nodes are being drained and released first
        (`force`); refused (Conflict) while it has nodes and `force` is not given."""
        params = {"force": "true"} if force else None
        response = self._request("DELETE", _pool(name), params=params)
        return response.status_code == 204

    def usage(self, since: float | None = None) -> list[WorkspaceUsage]:
        """GPU-hours and cost of every workspace this token may see."""
        params = {} if since is None else {"since": str(since)}
        return self._get(UsageList, "/v1/usage", params).usage

    def workspace_usage(
        self, workspace: str | None = None, since: float | None = None
    ) -> WorkspaceUsage:
        params = {} if since is None else {"since": str(since)}
        return self._get(WorkspaceUsage, f"{self._ws(workspace)}/usage", params)
