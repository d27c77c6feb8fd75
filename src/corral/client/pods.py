"""The SDK's calls about dev pods, SSH keys, volumes, and the relay that reaches a replica."""

from __future__ import annotations

from urllib.parse import quote

from corral.client.http import Http
from corral.client.relay import RelayKind, relay_path
from corral.spec.pod import PodSpec
from corral.urls import ws_url
from corral.wire.pods import (
    HostKeyView,
    PodList,
    PodView,
    SshKeyAdd,
    SshKeyList,
    SshKeyView,
    VolumeCreate,
    VolumeList,
    VolumeView,
)


class PodsApi(Http):
    # -- pods ------------------------------------------------------------------------------

    def _pod(self, name: str) -> str:
        return f"{self._ws()}/pods/{quote(name, safe='')}"

    def create_pod(self, spec: PodSpec) -> PodView:
        """Create (and start) a pod in `spec.workspace` when it names one, else this client's."""
        path = f"{self._ws(spec.workspace)}/pods"
        return self._send(PodView, "POST", path, spec.model_dump(mode="json", exclude_none=True))

    def list_pods(self) -> list[PodView]:
        return self._get(PodList, f"{self._ws()}/pods").pods

    def get_pod(self, name: str) -> PodView:
        return self._get(PodView, self._pod(name))

    def stop_pod(self, name: str) -> PodView:
        """Stop it and free its GPUs; the files in its working directory stay."""
        return self._send(PodView, "POST", f"{self._pod(name)}/stop", None)

    def start_pod(self, name: str) -> PodView:
        return self._send(PodView, "POST", f"{self._pod(name)}/start", None)

    def delete_pod(self, name: str) -> None:
        self._request("DELETE", self._pod(name))

    # -- SSH keys ----------------------------------------------------------------------------

    def add_ssh_key(self, name: str, public_key: str) -> SshKeyView:
        body = SshKeyAdd(name=name, public_key=public_key).model_dump(mode="json")
        return self._send(SshKeyView, "POST", f"{self._ws()}/ssh-keys", body)

    def list_ssh_keys(self) -> list[SshKeyView]:
        return self._get(SshKeyList, f"{self._ws()}/ssh-keys").keys

    def delete_ssh_key(self, name: str) -> None:
        self._request("DELETE", f"{self._ws()}/ssh-keys/{quote(name, safe='')}")

    def host_key(self) -> HostKeyView:
        """The workspace's SSH host key: every session server presents it; pin it."""
        return self._get(HostKeyView, f"{self._ws()}/ssh/host-key")

    # -- volumes -----------------------------------------------------------------------------

    def create_volume(self, name: str) -> VolumeView:
        body = VolumeCreate(name=name).model_dump(mode="json")
        return self._send(VolumeView, "POST", f"{self._ws()}/volumes", body)

    def list_volumes(self) -> list[VolumeView]:
        return self._get(VolumeList, f"{self._ws()}/volumes").volumes

    def delete_volume(self, name: str) -> None:
        """Refused (409) while a live pod or job mounts it."""
        self._request("DELETE", f"{self._ws()}/volumes/{quote(name, safe='')}")

    # -- the relay ---------------------------------------------------------------------------

    def relay_url(self, kind: RelayKind, name: str, replica: int | None = None) -> str:
        """The WebSocket URL that carries SSH bytes to pod `name`, or to replica `replica`
        of job `name` (see corral.client.relay)."""
        return ws_url(self.server, relay_path(self.workspace, kind, name, replica))

    @property
    def token(self) -> str | None:
        """The bearer token this client sends, for the relay's own connection."""
        value = self._http.headers.get("Authorization", "")
        return value.removeprefix("Bearer ") or None
