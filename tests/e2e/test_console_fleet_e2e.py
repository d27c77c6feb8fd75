"""The fleet page in a real browser: two fake-GPU agents, one node cordoned through the SDK
and one from the page; a workspace's viewer sees no button and a forged action is refused."""

from __future__ import annotations

from playwright.sync_api import expect

from support.cluster import Cluster
from support.console import LogIn


def test_the_fleet_shows_a_cordoned_node_and_the_admin_cordons_another(
    cluster: Cluster, log_in: LogIn
) -> None:
    for name in ("node-a", "node-b"):
        cluster.agent(name, "--fake-gpus", "H100:4")
    for name in ("node-a", "node-b"):
        cluster.wait_node_ready(name)
    with cluster.client() as client:
        client.cordon_node("node-a")

    page = log_in()
    a = page.locator('[data-testid="node-card"][data-node="node-a"]')
    b = page.locator('[data-testid="node-card"][data-node="node-b"]')
    expect(a).to_have_class("node cordoned")
    expect(a.get_by_test_id("condition")).to_have_text("cordoned")
    expect(a.get_by_test_id("cordon-reason")).to_contain_text("cordoned by")
    expect(a.locator("i.gpu.cordoned")).to_have_count(4)
    expect(b.locator("i.gpu.idle")).to_have_count(4)
    expect(page.get_by_test_id("total-gpus")).to_contain_text("8")

    b.get_by_test_id("cordon").click()
    expect(b).to_have_class("node cordoned")
    expect(b.get_by_test_id("cordon-reason")).to_contain_text("cordoned by")
    expect(page.get_by_test_id("flash")).to_have_text("node 'node-b' cordoned")
    with cluster.client() as client:
        assert {n.name: n.condition for n in client.list_nodes()}["node-b"] == "cordoned"
    # The grid's next poll keeps it so (it reads the store, not the click's answer).
    expect(page.get_by_test_id("total-out")).to_contain_text("8 · 0 · 0")
    b.get_by_test_id("uncordon").click()
    expect(b).to_have_class("node ready")


def test_a_viewer_sees_no_button_and_a_forged_cordon_is_refused(
    cluster: Cluster, log_in: LogIn
) -> None:
    cluster.agent("node-a", "--fake-gpus", "H100:4")
    cluster.wait_node_ready("node-a")
    with cluster.client() as client:
        client.create_workspace("team")
        viewer = client.create_token(role="viewer", workspace="team").token
    assert viewer is not None

    page = log_in(token=viewer)
    card = page.locator('[data-testid="node-card"][data-node="node-a"]')
    expect(card.get_by_test_id("condition")).to_have_text("ready")
    expect(page.get_by_test_id("who")).to_contain_text("viewer")
    expect(page.locator("[data-testid=cordon], [data-testid=drain]")).to_have_count(0)
    csrf = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")
    forged = page.request.post("/ui/nodes/node-a/cordon", headers={"X-CSRF-Token": csrf})
    assert forged.status == 403
    assert "only a cluster admin can cordon a node" in forged.text()
    with cluster.client() as client:
        assert {n.name: n.condition for n in client.list_nodes()}["node-a"] == "ready"
