"""The SDK's calls about the cluster: health, identity, nodes, workspaces, tokens, quotas,
secrets, status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import httpx

from corral.client.errors import (
    CorralError,
)
from corral.client.http import Http
from corral.wire.api import (
    DEFAULT_JOIN_TTL_S,
    JoinTokenCreate,
    JoinTokenList,
    JoinTokenView,
    NodeList,
    NodeView,
    QuotaList,
    QuotaSet,
    QuotaView,
    Role,
    SecretInfo,
    SecretList,
    SecretSet,
    StatusView,
    TokenCreate,
    TokenInfo,
    TokenList,
    TokenView,
    WhoAmI,
    WorkspaceCreate,
    WorkspaceList,
    WorkspaceView,
)
from corral.wire.health import FaultKind
from corral.wire.nodes import FaultRequest, NodeDetail

# The server waits up to 15 s for a node's checks on `set-healthy` (api/nodes.py), then
# answers "still checking": the call's read timeout must outlast that wait.
SET_HEALTHY_TIMEOUT_S = 25.0


class ClusterApi(Http):
    # -- cluster -------------------------------------------------------------------------

    def health(self) -> bool:
        """True when the server answers /healthz with ok; never raises for a down server."""
        try:
            body = self._json(self._request("GET", "/healthz"))
        except CorralError:
            return False
        return isinstance(body, dict) and body.get("ok") is True

    def whoami(self) -> WhoAmI:
        return self._get(WhoAmI, "/v1/whoami")

    def status(self) -> StatusView:
        """Nodes, GPUs, work and endpoints at a glance (`corral status`)."""
        return self._get(StatusView, "/v1/status")

    def list_nodes(self) -> list[NodeView]:
        return list(self._every(NodeList, "/v1/nodes", {}, lambda p: p.nodes))

    def cordon_node(self, name: str) -> NodeView:
        """The node keeps what runs there and takes nothing new."""
        return self._send(NodeView, "POST", f"/v1/nodes/{quote(name, safe='')}/cordon", None)

    def uncordon_node(self, name: str) -> NodeView:
        return self._send(NodeView, "POST", f"/v1/nodes/{quote(name, safe='')}/uncordon", None)

    def get_node(self, name: str) -> NodeDetail:
        """One node: its GPUs' signals and health, its health events, what runs there."""
        return self._get(NodeDetail, _node(name))

    def drain_node(self, name: str) -> NodeDetail:
        """Cordon the node and move its work elsewhere; `.outcome` says what moved."""
        return self._send(NodeDetail, "POST", f"{_node(name)}/drain", None)

    def set_node_healthy(self, name: str) -> NodeDetail:
        """Say the node is repaired: it comes back once its next checks pass. The server
        runs them now and waits for them (up to 15 s); `.outcome` says how it went."""
        with self._timeout_at_least(SET_HEALTHY_TIMEOUT_S):
            return self._send(NodeDetail, "POST", f"{_node(name)}/set-healthy", None)

    def delete_node(self, name: str) -> None:
        """Forget the node; refused (Conflict) while replicas run there."""
        self._request("DELETE", _node(name))

    def inject_fault(
        self,
        name: str,
        kind: FaultKind,
        gpu: int | None = None,
        xid: int | None = None,
        subcode: int | None = None,
    ) -> NodeDetail:
        """Make a fake-GPU node's checks see a fault (tests, demos; cluster admins)."""
        body = FaultRequest(kind=kind, gpu=gpu, xid=xid, subcode=subcode).model_dump(
            mode="json", exclude_none=True
        )
        return self._send(NodeDetail, "POST", f"{_node(name)}/faults", body)

    @contextmanager
    def _timeout_at_least(self, seconds: float) -> Iterator[None]:
        """This client's timeouts raised to `seconds` for one call (never lowered). The
        client is not meant to be shared between threads while such a call runs."""
        if self.timeout >= seconds:
            yield
            return
        saved, saved_http = self.timeout, self._http.timeout
        self.timeout, self._http.timeout = seconds, httpx.Timeout(seconds)
        try:
            yield
        finally:
            self.timeout, self._http.timeout = saved, saved_http

    def list_workspaces(self) -> list[WorkspaceView]:
        return list(self._every(WorkspaceList, "/v1/workspaces", {}, lambda p: p.workspaces))

    def create_workspace(self, name: str) -> WorkspaceView:
        body = WorkspaceCreate(name=name).model_dump(mode="json")
        return self._send(WorkspaceView, "POST", "/v1/workspaces", body)

    def create_token(
        self, role: Role = "member", workspace: str | None = None, name: str | None = None
    ) -> TokenView:
        """A new API token; its secret is in `.token` and is never shown again."""
        body = TokenCreate(name=name, role=role, workspace=workspace).model_dump(
            mode="json", exclude_none=True
        )
        return self._send(TokenView, "POST", "/v1/tokens", body)

    def list_tokens(self, workspace: str | None = None) -> list[TokenInfo]:
        """The tokens this (admin) token administers; never their secrets."""
        params = {"workspace": workspace} if workspace else {}
        return list(self._every(TokenList, "/v1/tokens", params, lambda p: p.tokens))

    def revoke_token(self, name: str, workspace: str | None = None) -> None:
        """Revoke a token of `workspace` (default: the caller's own scope, the cluster's
        tokens for a cluster admin). Other API servers honour it within 10 s."""
        params = {"workspace": workspace} if workspace else None
        self._request("DELETE", f"/v1/tokens/{quote(name, safe='')}", params=params)

    def create_join_token(
        self,
        name: str | None = None,
        ttl_s: float | None = DEFAULT_JOIN_TTL_S,
        max_uses: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> JoinTokenView:
        """A token agents register nodes with; its secret is in `.token`, shown once.
        ttl_s None: it never expires; max_uses None: unlimited registrations; labels: what
        the server labels each node registering with it (wire.api.BOUND_LABELS: only so)."""
        body = JoinTokenCreate(name=name, ttl_s=ttl_s, max_uses=max_uses, labels=labels).model_dump(
            mode="json"
        )
        return self._send(JoinTokenView, "POST", "/v1/join-tokens", body)

    def list_join_tokens(self) -> list[JoinTokenView]:
        return list(self._every(JoinTokenList, "/v1/join-tokens", {}, lambda p: p.join_tokens))

    def revoke_join_token(self, name: str) -> None:
        """Nodes can no longer register with it; registered nodes stay."""
        self._request("DELETE", f"/v1/join-tokens/{quote(name, safe='')}")

    # -- quotas --------------------------------------------------------------------------

    def list_quotas(self) -> list[QuotaView]:
        return list(self._every(QuotaList, "/v1/quotas", {}, lambda p: p.quotas))

    def get_quota(self, workspace: str | None = None) -> QuotaView:
        return self._get(QuotaView, f"{self._ws(workspace)}/quota")

    def set_quota(self, workspace: str, gpus: dict[str, int]) -> QuotaView:
        """Replace `workspace`'s guaranteed GPUs per model (cluster admins only)."""
        body = QuotaSet(gpus=gpus).model_dump(mode="json")
        return self._send(QuotaView, "PUT", f"{self._ws(workspace)}/quota", body)

    # -- secrets -------------------------------------------------------------------------

    def set_secret(
        self, name: str, value: str, workspace: str | None = None
    ) -> tuple[SecretInfo, bool]:
        """Create or replace a workspace secret; True when it was created. The value is
        stored encrypted and no API returns it: replicas get it as their spec's
        `secrets:` say."""
        body = SecretSet(value=value).model_dump(mode="json")
        response = self._request("PUT", self._secret(name, workspace), json=body)
        return self._parse(SecretInfo, response), response.status_code == 201

    def list_secrets(self, workspace: str | None = None) -> list[SecretInfo]:
        """Names and times; never values."""
        path = f"{self._ws(workspace)}/secrets"
        return list(self._every(SecretList, path, {}, lambda p: p.secrets))

    def delete_secret(self, name: str, workspace: str | None = None) -> None:
        self._request("DELETE", self._secret(name, workspace))


def _node(name: str) -> str:
    return f"/v1/nodes/{quote(name, safe='')}"
