"""The SDK (and so the CLI) pointed at the gateway instead of the API says so, rather than
reporting the gateway's "no such endpoint" as if the control plane had said it."""

from __future__ import annotations

import pytest

from corral.client import Client, NotCorralApi
from gateway.conftest import Procs


def test_a_client_pointed_at_the_gateway_is_told_it_is_the_gateway(procs: Procs) -> None:
    gw = procs.gateway(procs.plane())
    with Client(gw.url, "crl_x", "default") as client, pytest.raises(NotCorralApi) as info:
        client.list_jobs()
    text = str(info.value)
    assert text.startswith(f"{gw.url} is not a corral API server: it is corral's gateway")
    assert "point --server or CORRAL_SERVER at the control plane" in text
