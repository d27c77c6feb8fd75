"""The fleet page: its view model (grouping, a GPU cell's state and shade, the totals), the
fleet read (`services/fleet_view`) on both databases, and the page, its grid fragment and
the node actions through the real app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.core.states import NodeCondition
from corral.providers.catalog import Catalog
from corral.server.auth import Principal
from corral.server.runtime import ControlPlane
from corral.server.services import health
from corral.server.services.fleet_view import PATH_GPUS, NodeFacts, Running, fleet
from corral.server.services.identity import bootstrap, workspace_by_name
from corral.server.store.db import Store
from corral.server.store.migrate import upgrade
from corral.server.store.tables import Node
from corral.web.views import fleet as views
from corral.web.views.fleet import CellState
from corral.wire.api import GpuView, NodeView
from corral.wire.health import GpuSignals, HealthReport
from support.app import ADMIN_TOKEN
from support.console import gpu_view, log_in, new_token
from support.store import add_run, register_node

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# -- the view model -------------------------------------------------------------------------


def node(
    name: str, gpus: int | list[GpuView] = 2, labels: dict[str, str] | None = None, **fields: Any
) -> NodeView:
    values: dict[str, Any] = {
        "id": f"id-{name}",
        "name": name,
        "address": None,
        "condition": NodeCondition.READY,
        "gpu_backend": "fake",
        "gpus": [gpu_view(i) for i in range(gpus)] if isinstance(gpus, int) else gpus,
        "cpus": 8,
        "memory_mb": 16000,
        "disk_mb": 100000,
        "labels": labels or {},
        "agent_version": "0",
        "connected": True,
        "last_heartbeat_at": 1.0,
        "heartbeat_age_s": 2.0,
        "registered_at": 0.0,
        **fields,
    }
    return NodeView(**values)


def facts(view: NodeView, **fields: Any) -> NodeFacts:
    return NodeFacts(view=view, **fields)


def at(
    provider: str | None, region: str | None, zone: str | None, rack: str | None
) -> dict[str, str]:
    found = {"provider": provider, "region": region, "zone": zone, "rack": rack}
    return {k: v for k, v in found.items() if v is not None}


def test_nodes_group_by_provider_region_zone_rack_with_unlabelled_ones_last() -> None:
    fleet_ = views.fleet(
        [
            facts(node("n-b", labels=at("aws", "us-east-1", "a", "r2"))),
            facts(node("n-x")),  # no topology labels at all
            facts(node("n-a", labels=at("aws", "us-east-1", "a", "r2"))),
            facts(node("n-c", labels=at("aws", "us-east-1", "a", "r1"))),
            facts(node("n-d", labels=at("aws", None, None, "r9"))),
            facts(node("n-e", labels=at("aws", "eu-west-1", "b", "r1"))),
            facts(node("n-f", labels=at("ssh", "lab", "1", "rack-7"))),
        ],
        views.Filters(),
        can_act=False,
    )
    shown = [(p.name, r.path, [n.name for n in r.nodes]) for p in fleet_.providers for r in p.racks]
    assert shown == [
        ("aws", "eu-west-1 / b / r1", ["n-e"]),
        ("aws", "us-east-1 / a / r1", ["n-c"]),
        ("aws", "us-east-1 / a / r2", ["n-a", "n-b"]),  # by name within a rack
        ("aws", "— / — / r9", ["n-d"]),
        ("ssh", "lab / 1 / rack-7", ["n-f"]),
        ("—", "— / — / —", ["n-x"]),
    ]
    assert fleet_.providers[0].nodes == 5 and fleet_.providers[0].gpus == 10


@pytest.mark.parametrize(
    ("node_fields", "gpu_fields", "expected"),
    [
        ({}, {}, CellState.IDLE),
        ({}, {"allocated": True}, CellState.ALLOCATED),
        ({"condition": NodeCondition.CORDONED}, {"allocated": True}, CellState.CORDONED),
        # A reason kept while the node is ready again (it was lost, came back): cordoned.
        ({"cordon_reason": "cordoned by ops"}, {}, CellState.CORDONED),
        ({"condition": NodeCondition.CORDONED}, {"health": "unhealthy"}, CellState.UNHEALTHY),
        ({}, {"healthy": False}, CellState.UNHEALTHY),  # the scheduler may not place on it
        ({"condition": NodeCondition.UNHEALTHY}, {}, CellState.UNHEALTHY),
        ({"condition": NodeCondition.LOST}, {"health": "unhealthy"}, CellState.LOST),
        ({"condition": NodeCondition.LOST, "cordon_reason": "x"}, {}, CellState.LOST),
        ({}, {"health": "degraded"}, CellState.IDLE),  # degraded is a mark, not a state
    ],
)
def test_a_cells_state_is_the_first_that_holds_lost_unhealthy_cordoned_allocated_idle(
    node_fields: dict[str, Any], gpu_fields: dict[str, Any], expected: CellState
) -> None:
    view = node("n", gpus=0, **node_fields)
    assert views.cell_state(view, gpu_view(0, **gpu_fields)) == expected


def test_a_cell_keeps_what_its_state_hides_in_its_classes_and_title() -> None:
    view = node(
        "n",
        condition=NodeCondition.CORDONED,
        cordon_reason="cordoned by ops",
        gpus=[
            gpu_view(0, allocated=True, health="degraded", sentence="GPU 0 runs hot"),
            gpu_view(1),
        ],
    )
    running = [Running("default", "train", "job", "train", 0, (0,), "running")]
    card = views.node_card(facts(view, running=running, utilization={0: 87.4}))
    held, free = card.cells
    assert held.classes == "gpu cordoned degraded busy"
    assert held.utilization == 87
    assert (
        held.title == "GPU 0 · H100 · cordoned · GPU 0 runs hot · default/train #0 · 87% utilized"
    )
    assert (free.classes, free.utilization, free.title) == (
        "gpu cordoned",
        None,
        "GPU 1 · H100 · cordoned",
    )
    assert card.cordoned and card.classes == "node cordoned"
    assert [w.href for w in card.workloads] == ["/ui/jobs/default/train"]


def test_a_gpu_held_by_another_workspace_is_not_named() -> None:
    view = node("n", gpus=[gpu_view(0, allocated=True)])
    card = views.node_card(facts(view, hidden=1))
    assert card.cells[0].title == "GPU 0 · H100 · allocated · a job of another workspace"
    assert card.hidden == 1 and card.workloads == []


@pytest.mark.parametrize(
    ("reported", "shade"),
    [(None, None), (0.0, 0), (87.4, 87), (87.6, 88), (140.0, 100), (-3.0, 0), (float("nan"), None)],
)
def test_utilization_shades_a_cell_in_whole_percent(
    reported: float | None, shade: int | None
) -> None:
    assert views.shade(reported) == shade


def test_totals_count_gpus_by_model_and_state_and_add_up_known_prices() -> None:
    cards = [
        views.node_card(
            facts(node("a", gpus=[gpu_view(0, allocated=True), gpu_view(1)]), price_per_hour=10.0)
        ),
        views.node_card(
            facts(node("b", gpus=[gpu_view(0, model="A100")], condition=NodeCondition.LOST))
        ),
        views.node_card(
            facts(node("c", gpus=[gpu_view(0), gpu_view(1)], cordon_reason="x"), price_per_hour=2.5)
        ),
    ]
    t = views.totals(cards)
    assert (t.nodes, t.gpus) == (3, 5)
    assert t.by_state == {
        CellState.IDLE: 1,
        CellState.ALLOCATED: 1,
        CellState.CORDONED: 2,
        CellState.UNHEALTHY: 0,
        CellState.LOST: 1,
    }
    assert [(m.model, m.total, m.counts[CellState.LOST]) for m in t.by_model] == [
        ("A100", 1, 1),
        ("H100", 4, 0),
    ]
    assert t.cost_per_hour == 12.5 and t.unpriced_nodes == 1
    assert t.allocated_share == 0.5  # of the GPUs in service (allocated + idle)
    none = views.totals([cards[1]])
    assert none.cost_per_hour is None and none.allocated_share is None


def test_filters_keep_nodes_of_a_gpu_model_or_a_condition_and_say_so_in_the_url() -> None:
    nodes = [
        facts(node("a")),
        facts(node("b", gpus=[gpu_view(0, model="A100")], condition=NodeCondition.CORDONED)),
    ]
    by_model = views.fleet(nodes, views.Filters(model="A100"), can_act=False)
    assert [n.name for p in by_model.providers for r in p.racks for n in r.nodes] == ["b"]
    assert by_model.models == ["A100", "H100"] and by_model.all_nodes == 2
    assert by_model.filters.query() == "model=A100"
    cordoned = views.Filters(condition=NodeCondition.CORDONED)
    assert views.fleet(nodes, cordoned, can_act=False).totals.nodes == 1
    assert cordoned.query() == "condition=cordoned"


def test_shape_says_how_many_gpus_of_which_model() -> None:
    assert views.shape([]) == "no GPUs"
    assert views.shape([gpu_view(0), gpu_view(1)]) == "2x H100 (80 GB)"
    mixed = [gpu_view(0), gpu_view(1, model="T4", memory_mb=16384)]
    assert views.shape(mixed) == "1x H100 (80 GB) + 1x T4 (16 GB)"


# -- the fleet read, on both databases -------------------------------------------------------

ADMIN_P = Principal("t-admin", "admin", "admin", None, None)


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(database_url)
    upgrade(s.engine)
    bootstrap(s, 1000.0, tmp_path, ADMIN_TOKEN, "crj_join")
    yield s
    s.close()


def report(name: str, utilization: list[float | None]) -> HealthReport:
    gpus = [
        GpuSignals(index=i, uuid=f"{name}-{i}", utilization_pct=u, temperature_c=40.0)
        for i, u in enumerate(utilization)
    ]
    return HealthReport(sent_at=5.0, full=True, backend="fake", gpus=gpus)


def test_the_fleet_read_scopes_names_and_signals_and_prices_nodes(store: Store) -> None:
    a = register_node(store, "node-a", gpus=4)
    b = register_node(store, "node-b", gpus=2)
    with store.transaction() as session:
        default = workspace_by_name(session, "default")
        assert default is not None
        add_run(session, default.id, a, 2, 3.0, name="train")
        health.record_health(session, a, report("node-a", [91.0, 55.5, None, 0.0]), 5.0)
        # A price an operator's join token bound to node-b (costs.PRICE_LABEL).
        row = session.get(Node, b)
        assert row is not None
        row.labels = {**row.labels, "price-per-hour": "10.0"}
    with store.read() as session:
        seen = {f.view.name: f for f in fleet(session, ADMIN_P, 10.0, Catalog())}
        team = Principal("t-b", "b", "member", "ws-other", "other")
        theirs = {f.view.name: f for f in fleet(session, team, 10.0, Catalog())}
        one = fleet(session, ADMIN_P, 10.0, Catalog(), node="node-b")
    assert seen["node-a"].utilization == {0: 91.0, 1: 55.5, 3: 0.0}
    assert [(r.workspace, r.name, r.kind, r.gpus) for r in seen["node-a"].running] == [
        ("default", "train", "job", (0, 1))
    ]
    assert seen["node-a"].price_per_hour is None
    assert seen["node-b"].price_per_hour == pytest.approx(10.0)  # per node, not per GPU
    assert seen["node-a"].view.address == "node-a"
    # Another workspace's token: a count, no name, no signals, no address.
    assert theirs["node-a"].running == [] and theirs["node-a"].hidden == 1
    assert theirs["node-a"].utilization == {} and theirs["node-a"].view.address is None
    assert [f.view.name for f in one] == ["node-b"]


# -- the page through the real app ------------------------------------------------------------


def cp_of(client: TestClient) -> ControlPlane:
    return client.app.state.cp  # type: ignore[attr-defined,no-any-return]


def card_of(page: str, name: str) -> str:
    found = re.search(rf'<article class="([^"]*)"[^>]*data-node="{name}".*?</article>', page, re.S)
    assert found, f"no card for {name}"
    return found.group(0)


def test_a_node_cordoned_through_the_api_shows_cordoned_with_its_reason(
    admin: TestClient,
) -> None:
    register_node(cp_of(admin).store, "gpu-1", gpus=4, labels=at("aws", "us-east-1", "a", "r1"))
    register_node(cp_of(admin).store, "gpu-2", gpus=4)
    assert admin.post("/v1/nodes/gpu-1/cordon", headers=ADMIN).status_code == 200
    page = admin.get("/ui/fleet")
    assert page.status_code == 200 and "total;dur=" in page.headers["server-timing"]
    cordoned = card_of(page.text, "gpu-1")
    assert 'class="node cordoned"' in cordoned
    assert '<span class="badge cordoned" data-testid="condition">cordoned</span>' in cordoned
    assert re.search(r'data-testid="cordon-reason">cordoned by [^<]+<', cordoned)
    assert cordoned.count('class="gpu cordoned"') == 4
    assert 'data-testid="uncordon"' in cordoned and 'data-testid="cordon"' not in cordoned
    ready = card_of(page.text, "gpu-2")
    assert 'class="node ready"' in ready and 'data-testid="cordon"' in ready
    assert "aws" in page.text and "us-east-1 / a / r1" in page.text
    grid = admin.get("/ui/fleet/grid", headers={"HX-Request": "true"})
    assert grid.text.startswith('<div id="fleet-grid"') and 'hx-trigger="every 3s"' in grid.text
    assert 'class="node cordoned"' in card_of(grid.text, "gpu-1")


def test_filters_are_query_parameters_the_grid_keeps(admin: TestClient) -> None:
    register_node(cp_of(admin).store, "gpu-1", gpus=2)
    register_node(cp_of(admin).store, "cpu-1")
    assert admin.post("/v1/nodes/cpu-1/cordon", headers=ADMIN).status_code == 200
    page = admin.get("/ui/fleet?condition=cordoned&model=")
    assert 'data-node="cpu-1"' in page.text and 'data-node="gpu-1"' not in page.text
    assert 'hx-get="/ui/fleet/grid?condition=cordoned"' in page.text
    assert '<option value="cordoned" selected>' in page.text
    only_h100 = admin.get("/ui/fleet/grid?model=H100").text
    assert 'data-node="gpu-1"' in only_h100 and 'data-node="cpu-1"' not in only_h100
    bad = admin.get("/ui/fleet?condition=sleepy")
    assert bad.status_code == 422 and "condition &#39;sleepy&#39; is not one of" in bad.text


def test_the_admin_cordons_uncordons_and_drains_from_the_page(admin: TestClient) -> None:
    csrf = log_in(admin)
    node_id = register_node(cp_of(admin).store, "gpu-1", gpus=4)
    with cp_of(admin).store.transaction() as session:
        default = workspace_by_name(session, "default")
        assert default is not None
        add_run(session, default.id, node_id, 2, cp_of(admin).clock.now(), name="train")
    hx = {"HX-Request": "true", "X-CSRF-Token": csrf}
    done = admin.post("/ui/nodes/gpu-1/cordon", headers=hx)
    assert done.status_code == 200, done.text
    assert done.text.startswith('<article class="node cordoned"')
    assert 'id="flash"' in done.text and "node &#39;gpu-1&#39; cordoned" in done.text
    assert admin.get("/v1/nodes/gpu-1", headers=ADMIN).json()["node"]["condition"] == "cordoned"
    back = admin.post("/ui/nodes/gpu-1/uncordon", headers=hx)
    assert back.status_code == 200 and back.text.startswith('<article class="node ready"')
    assert admin.get("/v1/nodes/gpu-1", headers=ADMIN).json()["node"]["condition"] == "ready"
    drained = admin.post("/ui/nodes/gpu-1/drain?part=panel", headers=hx)
    assert drained.status_code == 200, drained.text
    assert drained.text.startswith('<div id="node-panel"')
    assert "drained: 1 job(s) queued again elsewhere" in drained.text
    detail = admin.get("/v1/nodes/gpu-1", headers=ADMIN).json()["node"]
    assert detail["cordon_reason"].startswith("drained by")
    missing = admin.post("/ui/nodes/nope/cordon", headers=hx)
    assert missing.status_code == 404 and "node &#39;nope&#39; not found" in missing.text


def test_actions_need_the_csrf_token(admin: TestClient) -> None:
    register_node(cp_of(admin).store, "gpu-1", gpus=1)
    refused = admin.post("/ui/nodes/gpu-1/cordon", headers={"HX-Request": "true"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    forged = admin.post("/ui/nodes/gpu-1/drain", headers={"X-CSRF-Token": "0" * 64})
    assert forged.status_code == 403
    assert admin.get("/v1/nodes/gpu-1", headers=ADMIN).json()["node"]["condition"] == "ready"


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
def test_only_a_cluster_admin_sees_buttons_and_may_act(admin: TestClient, role: str) -> None:
    """A workspace's admin is no cluster admin: nodes are the operator's."""
    register_node(cp_of(admin).store, "gpu-1", gpus=2)
    assert admin.post("/v1/workspaces", json={"name": "team"}, headers=ADMIN).status_code == 201
    csrf = log_in(admin, new_token(admin, role, "team"))
    for url in ("/ui/fleet", "/ui/nodes/gpu-1", "/ui/fleet/grid", "/ui/nodes/gpu-1/card"):
        page = admin.get(url)
        assert page.status_code == 200, url
        assert 'data-testid="actions"' not in page.text and "hx-post" not in page.text, url
    for verb in ("cordon", "uncordon", "drain"):
        refused = admin.post(f"/ui/nodes/gpu-1/{verb}", headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 403, verb
        assert "only a cluster admin can" in refused.text
    assert admin.get("/v1/nodes/gpu-1", headers=ADMIN).json()["node"]["condition"] == "ready"


def test_a_workspace_token_sees_no_other_workspaces_job_names(admin: TestClient) -> None:
    cp = cp_of(admin)
    node_id = register_node(cp.store, "gpu-1", gpus=4)
    for name in ("team-a", "team-b"):
        assert admin.post("/v1/workspaces", json={"name": name}, headers=ADMIN).status_code == 201
    with cp.store.transaction() as session:
        a = workspace_by_name(session, "team-a")
        b = workspace_by_name(session, "team-b")
        assert a is not None and b is not None
        add_run(
            session, a.id, node_id, 2, cp.clock.now(), name="secret-a", job_id="ja", replica_id="ra"
        )
        add_run(
            session, b.id, node_id, 1, cp.clock.now(), name="mine-b", job_id="jb", replica_id="rb"
        )
        # Job names in the node's events are scoped too.
        row = session.get(Node, node_id)
        assert row is not None
        health.event(session, row, cp.clock.now(), "action", "moved", workloads=["team-a/secret-a"])
    assert "team-a/secret-a" in admin.get("/ui/fleet").text  # the admin sees it: data exists
    log_in(admin, new_token(admin, "member", "team-b"))
    for url in (
        "/ui/fleet",
        "/ui/fleet/grid",
        "/ui/nodes/gpu-1",
        "/ui/nodes/gpu-1/panel",
        "/ui/nodes/gpu-1/card",
    ):
        for headers in ({}, {"HX-Request": "true"}):
            text = admin.get(url, headers=headers).text
            assert "secret-a" not in text and "team-a" not in text, url
            assert "mine-b" in text, url
    card = card_of(admin.get("/ui/fleet").text, "gpu-1")
    assert "1 replica of another workspace" in card
    assert "a job of another workspace" in card  # the cells it holds say so, unnamed


def test_utilization_of_a_node_with_more_gpus_than_sql_picks_is_read_too(store: Store) -> None:
    big = register_node(store, "big", gpus=PATH_GPUS + 2)
    with store.transaction() as session:
        reported = [float(i) for i in range(PATH_GPUS + 2)]
        health.record_health(session, big, report("big", reported), 5.0)
    with store.read() as session:
        (found,) = fleet(session, ADMIN_P, 10.0, Catalog())
    assert found.utilization == {i: float(i) for i in range(PATH_GPUS + 2)}
