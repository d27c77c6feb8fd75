"""Issue 9: the gateway's /_corral/load and /_corral/metrics name every workspace's
endpoints, replicas and traffic; only the control-plane token or the metrics token opens
them. /_corral/healthz stays public. Against a real `python -m corral.gateway` process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.harness import (
    ADMIN_HEADERS,
    EchoReplica,
    GatewayProc,
    echo_stack,
    raw_request,
    status_of,
    token_file,
)

METRICS_TOKEN = "metrics-scraper-token"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProc, EchoReplica]]:
    # One gateway for the module: these tests only read from it.
    tmp_path = tmp_path_factory.mktemp("gateway")
    metrics = token_file(tmp_path, METRICS_TOKEN, name="metrics-token")
    with echo_stack(tmp_path, "--metrics-token-file", str(metrics)) as pair:
        yield pair


@pytest.mark.parametrize("path", ["/_corral/load", "/_corral/metrics", "/_corral/nothing"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Bearer", "crl_gateway-test-admin", "Basic Y3JsOng="],
)
def test_without_a_valid_token_the_admin_paths_answer_401_and_no_data(
    stack: tuple[GatewayProc, EchoReplica], path: str, authorization: str | None
) -> None:
    gateway, replica = stack
    headers = {} if authorization is None else {"authorization": authorization}
    r = gateway.get(path, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized"
    assert "echo" not in r.text and replica.id not in r.text
    assert len(r.content) < 300


def test_the_control_plane_token_and_the_metrics_token_open_them(
    stack: tuple[GatewayProc, EchoReplica],
) -> None:
    gateway, _ = stack
    for headers in (ADMIN_HEADERS, {"authorization": f"bearer {METRICS_TOKEN}"}):
        load = gateway.get("/_corral/load", headers=headers)
        assert load.status_code == 200
        assert [e["name"] for e in load.json()["endpoints"]] == ["echo"]
        metrics = gateway.get("/_corral/metrics", headers=headers)
        assert metrics.status_code == 200
        assert "corral_gateway" in metrics.text


def test_healthz_stays_public(stack: tuple[GatewayProc, EchoReplica]) -> None:
    gateway, _ = stack
    r = gateway.get("/_corral/healthz", headers={})
    assert r.status_code == 200
    assert r.json() == {"ok": True}


def test_a_host_routed_request_cannot_reach_them_by_another_spelling(
    stack: tuple[GatewayProc, EchoReplica],
) -> None:
    gateway, _ = stack
    for target in (b"/_corral/load?window=1", b"/_corral/load/", b"/_corral//load"):
        head = b"GET " + target + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        response = raw_request(gateway.port, head)
        assert status_of(response) == 401, response[:200]
    assert httpx.get(gateway.url + "/_corral/metrics", timeout=5).status_code == 401
