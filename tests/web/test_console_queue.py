"""The Queue page: its view model, and the page in-process (scheduling order, reasons,
quota use, and what another workspace's token may see of it)."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from corral.core.states import JobState
from corral.server.runtime import ControlPlane
from corral.server.services.identity import workspace_by_name
from corral.server.services.queue_view import UNGUARANTEED, QueueFacts, QuotaUse, Waiting
from corral.server.store.tables import Job, Replica
from corral.web.views import queue as view
from corral.web.views.workloads import clip
from support.app import ADMIN_TOKEN
from support.console import log_in, new_token
from support.store import add_run, register_node

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NOW = 5_000.0
NEVER = {"resources": {"gpus": "H100:64"}}  # more than any node here has

# -- the view model -----------------------------------------------------------------------


def _waiting(position: int, **fields: object) -> Waiting:
    base: dict[str, object] = {
        "job_id": f"id-{position}",
        "name": f"job-{position}",
        "workspace": "team-a",
        "workload": f"job-{position}",
        "priority": 100,
        "replicas": 2,
        "gpus": 4,
        "gpu_type": "H100",
        "submitted_at": NOW - 60,
        "reason": "every ready node is full",
    }
    return Waiting(position, **{**base, **fields})  # type: ignore[arg-type]


def test_other_workspaces_fold_into_counted_lines() -> None:
    waiting = [
        Waiting(1, hidden=True),
        Waiting(2, hidden=True),
        _waiting(3),
        Waiting(4, hidden=True),
        _waiting(5, kind="endpoint", workload="serve", name="serve-r1-abc"),
        _waiting(6, kind="pod", workload="devbox", name="devbox-pod1", fits_now=True),
    ]
    lines = view.lines(waiting, NOW)
    assert [(line.positions, line.others) for line in lines] == [
        ("1–2", 2),
        ("3", 0),
        ("4", 1),
        ("5", 0),
        ("6", 0),
    ]
    assert all(line.name == "" and line.reason == "" for line in lines if line.others)
    job, endpoint, pod = lines[1], lines[3], lines[4]
    assert (job.href, job.gpus, job.priority, job.waited_s) == (
        "/ui/jobs/team-a/job-3",
        "8 × H100",
        "train",
        60,
    )
    assert (endpoint.href, endpoint.name, endpoint.job) == (
        "/ui/endpoints/team-a/serve",
        "serve",
        "serve-r1-abc",
    )
    assert pod.href is None and pod.status == "fits" and pod.reason.startswith("fits now")


def test_a_job_that_never_fits_says_so() -> None:
    (line,) = view.lines([_waiting(1, never_fits=True, priority=7, gpus=0)], NOW)
    assert (line.status, line.priority, line.gpus) == ("never", "7", "—")
    assert line.reason == "every ready node is full"


def test_quota_rows_name_the_guarantee_and_draw_borrowing() -> None:
    rows = view.quota_rows(
        [
            QuotaUse("team-a", "H100", guaranteed=8, used=4, borrowed=0, models=("H100",)),
            QuotaUse("team-a", "*", guaranteed=2, used=0, borrowed=0),
            QuotaUse("team-b", UNGUARANTEED, guaranteed=0, used=4, borrowed=4, models=("H100",)),
        ]
    )
    a, any_model, b = rows
    assert (a.what, a.used_pct, a.borrowed_pct) == ("H100", 50.0, 0.0)
    assert any_model.what == "any model"
    assert (b.what, b.used_pct, b.borrowed_pct) == ("no guarantee (H100)", 0.0, 100.0)
    assert "4 borrowed" in b.title
    assert a.bar and any_model.bar and b.bar
    (plain,) = view.quota_rows([QuotaUse("team-b", UNGUARANTEED, 0, 3, 0, ("H100",))], False)
    assert (plain.what, plain.bar) == ("H100", False)  # no guarantees anywhere: no bar


def test_the_page_counts_what_it_does_not_show() -> None:
    facts = QueueFacts(waiting=[_waiting(1)], pending=250, mine=40, quotas=[], quotas_set=False)
    page = view.page(facts, NOW, cluster_wide=False)
    assert (page.pending, page.mine, page.further) == (250, 40, 249)


# -- the page, in-process -----------------------------------------------------------------


def _cp(server: TestClient) -> ControlPlane:
    cp: ControlPlane = server.app.state.cp  # type: ignore[attr-defined]
    return cp


def _submit(server: TestClient, workspace: str, name: str, **spec: object) -> None:
    body = {"name": name, "command": "true", **spec}
    r = server.post(f"/v1/workspaces/{workspace}/jobs", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text


def _reasoned(server: TestClient, workspace: str, name: str) -> str:
    """The job's reason once the scheduler has looked at it."""
    deadline = time.monotonic() + 10
    while True:
        job = server.get(f"/v1/workspaces/{workspace}/jobs/{name}", headers=ADMIN).json()
        if job["reason"] and job["reason"] != "waiting for the scheduler":
            return str(job["reason"])
        assert time.monotonic() < deadline, f"the scheduler did not look at {name}"
        time.sleep(0.02)


def _rows(page: str) -> list[str]:
    return re.findall(r'data-testid="queue-row" data-name="([^"]+)"', page)


@pytest.fixture
def queued(server: TestClient) -> TestClient:
    """A node of 4 H100s; team-a guaranteed 2 H100 and holding 2; team-b borrowing 1 with a
    preemptible job; three pending jobs that never fit, at two priorities."""
    for name in ("team-a", "team-b"):
        assert server.post("/v1/workspaces", json={"name": name}, headers=ADMIN).status_code == 201
    r = server.put("/v1/workspaces/team-a/quota", json={"gpus": {"H100": 2}}, headers=ADMIN)
    assert r.status_code == 200, r.text
    cp = _cp(server)
    node = register_node(cp.store, "gpu-node-1", gpus=4)
    with cp.store.transaction() as session:
        team_a = workspace_by_name(session, "team-a")
        team_b = workspace_by_name(session, "team-b")
        assert team_a is not None and team_b is not None
        add_run(session, team_a.id, node, 2, cp.clock.now(), name="a-running")
        spec = {"name": "b-lender", "command": "true", "preemptible": True}
        spec["resources"] = {"gpus": "H100:1"}
        session.add(
            Job(
                id="jb",
                workspace_id=team_b.id,
                name="b-lender",
                spec=spec,
                state=JobState.RUNNING,
                priority=0,
                attempt=1,
                borrowed=True,
                submitted_at=cp.clock.now(),
                started_at=cp.clock.now(),
            )
        )
        session.flush()
        session.add(
            Replica(
                id="rb",
                job_id="jb",
                attempt=1,
                rank=0,
                node_id=node,
                gpus=[2],
                cpus=1,
                memory_mb=0,
                disk_mb=0,
                state="running",
                desired="run",
                created_at=cp.clock.now(),
                started_at=cp.clock.now(),
            )
        )
    _submit(server, "team-a", "a-first", **NEVER)
    _submit(server, "team-b", "b-second", **NEVER)
    _submit(server, "team-a", "a-urgent", priority="train", **NEVER)
    for ws, name in (("team-a", "a-first"), ("team-b", "b-second"), ("team-a", "a-urgent")):
        _reasoned(server, ws, name)
    return server


def test_the_admin_sees_the_queue_in_scheduling_order_with_reasons(queued: TestClient) -> None:
    log_in(queued)
    page = queued.get("/ui/queue")
    assert page.status_code == 200
    # Priority first; then, at equal priority, team-b (holding 1 GPU) before team-a
    # (holding 2): the smaller share of the fleet goes first (DRF), though a-first is older.
    assert _rows(page.text) == ["a-urgent", "b-second", "a-first"]
    assert page.text.count('data-status="never"') == 3
    assert 'hx-get="/ui/queue/live" hx-trigger="every 3s"' in page.text
    quota = re.findall(
        r'data-testid="quota-row" data-workspace="([^"]+)">\s*<td>[^<]*</td>\s*<td>([^<]*)</td>'
        r'\s*<td class="num">(\d+)</td>\s*<td class="num">(\d+)</td>\s*<td class="num">(\d+)</td>',
        page.text,
    )
    assert ("team-a", "H100", "2", "2", "0") in quota
    assert ("team-b", "no guarantee (H100)", "0", "1", "1") in quota


def test_the_reason_shown_is_the_schedulers(queued: TestClient) -> None:
    log_in(queued)
    reason = _reasoned(queued, "team-a", "a-first")
    assert "64" in reason  # the scheduler's words about this job, not a placeholder
    page = queued.get("/ui/queue/live", headers={"HX-Request": "true"})
    assert page.status_code == 200
    assert page.text.startswith('<div id="queue-live"')  # the part the page swaps
    assert str(escape(clip(reason, view.REASON_CHARS))) in page.text


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_a_workspace_token_sees_its_own_and_counts_the_rest(queued: TestClient, role: str) -> None:
    log_in(queued, new_token(queued, role, "team-b"))
    for url in ("/ui/queue", "/ui/queue/live", "/ui/queue?workspace=team-a"):
        for headers in ({}, {"HX-Request": "true"}):
            page = queued.get(url, headers=headers)
            assert page.status_code == 200, url
            assert _rows(page.text) == ["b-second"]
            for secret in ("a-urgent", "a-first", "a-running", "team-a"):
                assert secret not in page.text, (url, secret)
            # Its place in line: one job of another workspace ahead, one behind.
            others = re.findall(
                r'data-testid="queue-others">\s*<td class="num">([^<]+)</td>', page.text
            )
            assert others == ["1", "3"]
            assert re.findall(r'data-testid="quota-row" data-workspace="([^"]+)"', page.text) == [
                "team-b"
            ]


def test_an_empty_queue_says_so(server: TestClient) -> None:
    log_in(server)
    page = server.get("/ui/queue")
    assert page.status_code == 200
    assert 'data-testid="queue-empty"' in page.text
    assert 'data-testid="no-quotas"' in page.text
