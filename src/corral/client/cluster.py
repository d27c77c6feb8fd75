"""The SDK's calls about the cluster: health, identity, nodes, workspaces, tokens, quotas,
secrets, status."""

from __future__ import annotations

from urllib.parse import quote

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
    ) -> JoinTokenView:
        """A token agents register nodes with; its secret is in `.token`, shown once.
        ttl_s None: it never expires; max_uses None: unlimited registrations."""
        body = JoinTokenCreate(name=name, ttl_s=ttl_s, max_uses=max_uses).model_dump(mode="json")
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
