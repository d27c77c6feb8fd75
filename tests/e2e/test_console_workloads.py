"""The Workloads and Queue pages in a real browser, over a real server and agent."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from corral.core.states import JobState
from corral.spec import parse_job_spec
from support.cluster import Cluster, wait_for
from support.console import LogIn


def test_workloads_filter_and_the_queue_shows_the_pending_job(
    cluster: Cluster, log_in: LogIn
) -> None:
    cluster.agent("node-a", "--fake-gpus", "H100:2")
    cluster.wait_node_ready("node-a")
    with cluster.client() as client:
        client.submit_job(
            parse_job_spec(
                {"name": "sleeper", "command": "sleep 600", "resources": {"gpus": "H100:1"}}
            )
        )
        # More GPUs than the fleet has: it waits, and the scheduler says why.
        client.submit_job(
            parse_job_spec({"name": "huge", "command": "true", "resources": {"gpus": "H100:8"}})
        )
        wait_for("sleeper to run", lambda: client.get_job("sleeper").state == JobState.RUNNING)
        wait_for(
            "the scheduler's reason for huge",
            lambda: "H100" in (client.get_job("huge").reason or ""),
        )
        reason = client.get_job("huge").reason or ""

    page = log_in(start="/ui/workloads")
    rows = page.get_by_test_id("workload-row")
    expect(rows.filter(has_text="sleeper")).to_have_count(1)
    expect(rows.filter(has_text="huge")).to_have_count(1)
    expect(rows.filter(has_text="sleeper")).to_contain_text("node-a")

    page.get_by_test_id("filter-state").select_option("pending")
    page.get_by_test_id("filter-show").click()
    expect(page).to_have_url(re.compile(r"/ui/workloads\?.*state=pending"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("huge")
    expect(rows.first).to_contain_text("8 × H100")
    expect(rows.first.locator(".badge")).to_have_text("pending")

    page.get_by_test_id("filter-state").select_option("running")
    page.get_by_test_id("filter-show").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("sleeper")
    page.get_by_role("link", name="sleeper").click()
    expect(page).to_have_url(f"{cluster.url}/ui/jobs/default/sleeper")

    page.goto("/ui/queue")
    waiting = page.get_by_test_id("queue-row")
    expect(waiting).to_have_count(1)
    expect(waiting.first).to_contain_text("huge")
    expect(waiting.first.locator(".reason")).to_contain_text(reason[:60])
    # Work submitted after the page loaded appears there: only the poll can bring it.
    with cluster.client() as client:
        client.submit_job(
            parse_job_spec({"name": "later", "command": "true", "resources": {"gpus": "H100:4"}})
        )
    expect(waiting).to_have_count(2)
    expect(waiting.filter(has_text="later")).to_have_count(1)
