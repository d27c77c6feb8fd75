"""The SDK's calls about endpoints: deploy, list, get, update, delete, wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corral.client.errors import (
    CorralError,
)
from corral.client.http import Http
from corral.spec.endpoint import EndpointSpec
from corral.wire.api import (
    EndpointList,
    EndpointView,
)


class EndpointsApi(Http):
    # -- endpoints -----------------------------------------------------------------------

    def deploy_endpoint(self, spec: EndpointSpec) -> EndpointView:
        """Create an endpoint in `spec.workspace` when the spec names one, else this client's."""
        path = f"{self._ws(spec.workspace)}/endpoints"
        return self._send(EndpointView, "POST", path, _spec_body(spec))

    def list_endpoints(self) -> list[EndpointView]:
        return list(self._every(EndpointList, f"{self._ws()}/endpoints", {}, lambda p: p.endpoints))

    def get_endpoint(self, name: str) -> EndpointView:
        return self._get(EndpointView, self._endpoint(name))

    def update_endpoint(self, name: str, spec: EndpointSpec) -> EndpointView:
        """Roll out `spec` (the whole spec, not a patch): new replicas replace the old ones
        once ready. A spec equal to the current one changes nothing."""
        path = self._endpoint(name, spec.workspace)
        return self._send(EndpointView, "PUT", path, _spec_body(spec))

    def delete_endpoint(self, name: str) -> EndpointView:
        """Start removing it: its replicas drain, then it is gone (the view says `deleting`)."""
        return self._send(EndpointView, "DELETE", self._endpoint(name), None)

    def wait_endpoint(
        self,
        name: str,
        timeout: float | None = None,
        poll_s: float = 0.5,
        on_poll: Callable[[EndpointView], None] | None = None,
        revision: int | None = None,
    ) -> EndpointView:
        """Poll until the endpoint serves its current revision: `ready`; or `updating` with
        only old replicas left that drain (they take no new requests); or `scaled-to-zero`
        (the first request starts a replica). `on_poll` sees each view on the way; with
        `revision` (an update's), a timeout says that revision did not roll out.

        TimeoutError after `timeout` s, its message saying the state and the server's reason;
        CorralError if the endpoint is being deleted; NotFound if it is gone.
        """
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            view = self.get_endpoint(name)
            if on_poll is not None:
                on_poll(view)
            if _serves(view):
                return view
            if view.state == "deleting":
                raise CorralError(f"endpoint {name!r} is being deleted")
            if deadline is not None and self._clock() >= deadline:
                why = f": {view.reason}" if view.reason else ""
                what = "become ready" if revision is None else f"roll out revision {revision}"
                raise TimeoutError(
                    f"endpoint {name!r} did not {what} within {timeout:g} s (it is "
                    f"{view.state}, {view.ready_replicas} of {view.desired_replicas} replicas "
                    f"ready){why}"
                )
            self._sleep(poll_s)


def _serves(view: EndpointView) -> bool:
    if view.state in ("ready", "scaled-to-zero"):
        return True
    taking = [r for r in view.replicas if r.state != "draining"]
    return (
        view.state == "updating"
        and len(taking) >= max(1, view.desired_replicas)
        and all(r.revision == view.revision and r.state == "ready" for r in taking)
    )


def _spec_body(spec: EndpointSpec) -> Any:
    # Sizes are written as "NMi" and durations as seconds: the server reads back this spec.
    return spec.model_dump(mode="json", exclude_none=True)


# What the API's every answer carries (server/marker.py), and what the gateway's do.
