"""The endpoint page in-process: how to call it, its status fragment, its charts' JSON, and
that another workspace's token learns nothing through any of its URLs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.server.load_history import Sample
from corral.server.runtime import ControlPlane
from corral.web.views import endpoint as views
from corral.wire.api import EndpointReplicaView, EndpointView
from corral.wire.gateway import EndpointLoad, GatewayLoad, ReplicaLoad
from support.app import ADMIN_TOKEN, in_process
from support.console import log_in

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EP = "/v1/workspaces/default/endpoints"
PAGE = "/ui/endpoints/default/chat"


def deploy(client: TestClient, name: str = "chat", **spec: Any) -> dict[str, Any]:
    body = {"name": name, "command": "python3 -m http.server $PORT", **spec}
    r = client.post(EP, json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def gateway_load(arrivals: int, p50: float | None = None, p99: float | None = None) -> GatewayLoad:
    chat = EndpointLoad(
        name="chat",
        workspace="default",
        in_flight=2,
        held=0,
        arrivals=arrivals,
        completed=arrivals,
        rejected=0,
        mean_in_flight=1.5,
        window_s=1.0,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        replicas=[ReplicaLoad(id="r1", state="ready", in_flight=2)],
    )
    return GatewayLoad(gateway="gw-test", route_version=1, endpoints=[chat])


def cp_of(client: TestClient) -> ControlPlane:
    cp: ControlPlane = client.app.state.cp  # type: ignore[attr-defined]
    return cp


def test_the_page_shows_the_url_and_a_curl_line_with_the_workspace_token(
    admin: TestClient,
) -> None:
    deploy(admin)
    page = admin.get(PAGE)
    assert page.status_code == 200, page.text
    # No gateway address known to this server: the path under $GATEWAY, and why.
    assert 'data-testid="endpoint-url">/ep/chat/<' in page.text
    assert (
        "curl -H &#34;Authorization: Bearer $CORRAL_TOKEN&#34; &#34;$GATEWAY&#34;/ep/chat/"
        in page.text
    )
    assert "CORRAL_GATEWAY_PUBLIC_URL" in page.text
    # The charts, each fed by its own series URL; the status fragment polls.
    for chart in views.CHARTS:
        assert f'data-src="{PAGE}/series?chart={chart}"' in page.text
    assert f'hx-get="{PAGE}/replicas"' in page.text


@pytest.fixture
def with_gateway(tmp_path: Path) -> Iterator[TestClient]:
    options = {"gateway_public_url": "http://gw.example:8080/"}
    with in_process(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "home", **options) as client:
        log_in(client)
        yield client


def test_a_public_endpoint_curl_needs_no_token_and_names_the_gateway(
    with_gateway: TestClient,
) -> None:
    deploy(with_gateway, auth="public")
    page = with_gateway.get(PAGE).text
    assert 'data-testid="endpoint-url">http://gw.example:8080/ep/chat/<' in page
    assert 'data-testid="endpoint-curl">curl http://gw.example:8080/ep/chat/<' in page
    assert "Authorization" not in page.split('data-testid="endpoint-curl"')[1].split("</code>")[0]


def test_the_status_fragment_shows_the_replica_jobs_and_the_rollout(admin: TestClient) -> None:
    deploy(admin, min_replicas=2, max_replicas=4, resources={"gpus": "H100:64"})
    deadline = time.monotonic() + 15
    while True:  # the endpoint controller starts its replicas' jobs within a round or two
        fragment = admin.get(f"{PAGE}/replicas", headers={"HX-Request": "true"})
        assert fragment.status_code == 200, fragment.text
        if fragment.text.count('data-testid="replica-row"') == 2:
            break
        assert time.monotonic() < deadline, fragment.text
        time.sleep(0.05)
    html = fragment.text
    assert "<html" not in html  # a fragment, not a page
    jobs = admin.get("/v1/workspaces/default/jobs", headers=ADMIN).json()["jobs"]
    for job in jobs:
        assert f'href="/ui/jobs/default/{job["name"]}"' in html
    assert html.count("not placed") == 2  # no node has 64 H100s
    assert "every replica runs revision 1" in html
    assert "0 / 2" in html  # ready / desired


def test_the_series_is_the_gateways_load_history_in_the_charts_shape(admin: TestClient) -> None:
    deploy(admin)
    cp = cp_of(admin)
    now = time.time()
    cp.loads.report(gateway_load(100), now - 2.0)
    cp.loads.report(gateway_load(130, p50=4.0, p99=12.5), now - 1.0)
    # The last through the gateways' real route, which also reads the desired replicas.
    r = admin.post("/v1/gateway/load", json=gateway_load(145).model_dump(), headers=ADMIN)
    assert r.status_code == 202, r.text

    every = admin.get(f"{PAGE}/series")
    assert every.status_code == 200 and every.headers["content-type"] == "application/json"
    data = every.json()
    assert len(data["x"]) == 3 and data["x"] == sorted(data["x"])
    labels = [(s["label"], s["unit"]) for s in data["series"]]
    assert labels[0] == ("requests/s", "req/s")  # first: what the chart's data-last shows
    assert {"p50", "p99", "ready", "desired", "in flight", "held"} <= {s for s, _ in labels}
    assert all(len(s["values"]) == 3 for s in data["series"])
    rps = data["series"][0]["values"]
    assert rps[0] is None and rps[1] == pytest.approx(30.0, rel=0.01) and rps[2] > 0

    latency = admin.get(f"{PAGE}/series?chart=latency").json()["series"]
    assert [s["label"] for s in latency] == ["p50", "p99"]
    assert latency[1]["values"][1] == 12.5
    replicas = admin.get(f"{PAGE}/series?chart=replicas").json()["series"]
    assert replicas[0]["values"] == [1, 1, 1]  # ready, as the gateway routes
    assert replicas[1]["values"][-1] == 1  # desired, read from the store

    bad = admin.get(f"{PAGE}/series?chart=nope")
    assert bad.status_code == 422 and "requests" in bad.text
    # The page says what it saw last, in words.
    assert 'data-testid="stat-rps"' in admin.get(PAGE).text


def test_an_unknown_endpoint_is_a_404_page(admin: TestClient) -> None:
    answer = admin.get("/ui/endpoints/default/nope")
    assert answer.status_code == 404 and "endpoint &#39;nope&#39;" in answer.text
    assert admin.get("/ui/endpoints/default/nope/series").status_code == 404


def test_another_workspaces_token_learns_nothing_through_any_url(admin: TestClient) -> None:
    deploy(admin)
    cp_of(admin).loads.report(gateway_load(7), time.time())
    assert admin.post("/v1/workspaces", json={"name": "team-b"}, headers=ADMIN).status_code == 201
    made = admin.post("/v1/tokens", json={"role": "admin", "workspace": "team-b"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    log_in(admin, made.json()["token"])
    for name in ("chat", "no-such-endpoint"):  # the same answer whether it exists or not
        base = f"/ui/endpoints/default/{name}"
        for url, headers in (
            (base, {}),
            (f"{base}/replicas", {"HX-Request": "true"}),
            (f"{base}/series", {}),
            (f"{base}/series?chart=requests", {}),
        ):
            answer = admin.get(url, headers=headers)
            assert answer.status_code == 403, (url, answer.status_code)
            assert "team-b" in answer.text and "/ep/chat/" not in answer.text
            assert "requests/s" not in answer.text and "gw-test" not in answer.text
    # Its own workspace's page of the same name: not found, not the other's.
    assert admin.get("/ui/endpoints/team-b/chat").status_code == 404


# -- the view model (pure) ---------------------------------------------------------------


def view_of(client: TestClient) -> EndpointView:
    return EndpointView.model_validate(client.get(f"{EP}/chat", headers=ADMIN).json())


def test_curl_lines_quote_what_the_shell_would_split() -> None:
    assert views.curl_line("http://gw/ep/a/", True, True) == "curl http://gw/ep/a/"
    assert (
        views.curl_line("/ep/a/", False, False)
        == 'curl -H "Authorization: Bearer $CORRAL_TOKEN" "$GATEWAY"/ep/a/'
    )
    assert views.curl_line("http://gw/ep/a b/", True, True) == "curl 'http://gw/ep/a b/'"


def test_the_rollout_counts_replicas_by_revision(admin: TestClient) -> None:
    deploy(admin)
    view = view_of(admin)
    base = {"job": "j", "state": "ready", "node": "n"}
    rolling = view.model_copy(
        update={
            "revision": 3,
            "replicas": [
                *[EndpointReplicaView(**base, revision=2) for _ in range(2)],
                EndpointReplicaView(**{**base, "state": "starting"}, revision=3),
            ],
        }
    )
    out = views.rollout(rolling)
    assert not out.done
    assert out.summary.startswith("rolling out revision 3: 1 of 3 replicas on it (0 ready)")
    assert [(s.revision, s.current, s.replicas, s.ready) for s in out.shares] == [
        (3, True, 1, 0),
        (2, False, 2, 2),
    ]
    assert views.rollout(view.model_copy(update={"replicas": []})).summary == (
        "revision 1: no replica runs now"
    )


def test_the_load_now_says_when_no_gateway_reports() -> None:
    assert views.load_now([], 100.0).note == "no gateway has reported this endpoint's load yet"
    old = Sample(50.0, 3.0, 1.0, 2.0, 0.5, 0, 1, 1)
    stale = views.load_now([old], 100.0)
    assert not stale.reported and stale.rps == "—" and "50 s" in (stale.note or "")
    fresh = views.load_now([old], 52.0)
    assert fresh.reported and fresh.rps == "3.0" and fresh.p99 == "2.0 ms"


def test_the_scale_rule_in_words(admin: TestClient) -> None:
    deploy(admin)
    fixed = view_of(admin)
    assert views.scale_rule(fixed).startswith("Fixed at 1 replica: no autoscaling")
    spec = fixed.spec.model_copy(update={"min_replicas": 0, "max_replicas": 3})
    scaled = fixed.model_copy(update={"min_replicas": 0, "max_replicas": 3, "spec": spec})
    assert views.scale_rule(scaled) == (
        "Aims for 8 requests in flight per replica, between 0 and 3 replicas; "
        "to zero after 300 s without a request."
    )
