"""The Workloads page: its view model, and the page in-process (filters, keyset pages,
workspace scoping, bad queries read as a page)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from corral.core.states import EndpointState, JobState
from corral.server.errors import Invalid
from corral.server.runtime import ControlPlane
from corral.server.services.identity import workspace_by_name
from corral.server.services.workloads_view import Listed
from corral.server.store.tables import Job
from corral.spec.endpoint import EndpointSpec
from corral.spec.job import JobSpec
from corral.spec.pod import PodSpec
from corral.spec.resources import GpuRequest
from corral.web.views import workloads as view
from corral.wire.api import EndpointReplicaView, EndpointView, JobView, ReplicaView
from corral.wire.pods import PodView
from support.app import ADMIN_TOKEN
from support.console import log_in, new_token
from support.store import add_run, register_node

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NOW = 10_000.0

# -- the view model -----------------------------------------------------------------------


def _job(**update: object) -> JobView:
    spec = JobSpec.model_validate(
        {"name": "train", "command": "true", "replicas": 2, "resources": {"gpus": "H100:4"}}
    )
    base = JobView(
        name="train",
        workspace="team-a",
        state=JobState.RUNNING,
        spec=spec,
        attempt=1,
        restarts=0,
        submitted_at=NOW - 120,
        replicas=[
            ReplicaView(
                id=f"r{i}", rank=i, attempt=1, node=node, gpus=[0, 1, 2, 3], state="running"
            )
            for i, node in enumerate(["gpu-1", "gpu-2"])
        ],
    )
    return base.model_copy(update=update)


def test_a_job_row_links_its_page_and_says_its_gpus_and_nodes() -> None:
    (row,) = view.rows([Listed("job", _job())], NOW)
    assert row.href == "/ui/jobs/team-a/train"
    assert (row.gpus, row.gpus_title) == ("8 × H100", "2 replicas × 4 H100")
    assert row.where == "gpu-1, gpu-2"
    assert row.age_s == 120
    assert row.state == "running"


def test_a_pending_jobs_reason_is_clipped_with_the_whole_in_the_title() -> None:
    reason = "needs 64×H100 in one region; the largest region holds 8 even when empty " * 4
    (row,) = view.rows(
        [Listed("job", _job(state=JobState.PENDING, replicas=[], reason=reason))], NOW
    )
    assert row.where == "—"
    assert len(row.reason) == view.REASON_CHARS and row.reason.endswith("…")
    assert row.reason_full == reason
    assert row.gpus == "8 × H100"  # not yet placed: the spec's replicas


def test_many_nodes_are_counted_past_the_first_few() -> None:
    replicas = [
        ReplicaView(id=f"r{i}", rank=i, attempt=1, node=f"gpu-{i}", gpus=[0], state="running")
        for i in range(5)
    ]
    (row,) = view.rows([Listed("job", _job(replicas=replicas))], NOW)
    assert row.where == "gpu-0, gpu-1, gpu-2 +2"
    assert row.where_title == "gpu-0, gpu-1, gpu-2, gpu-3, gpu-4"


def test_endpoint_and_pod_rows() -> None:
    spec = EndpointSpec.model_validate(
        {"name": "serve", "command": "serve", "resources": {"gpus": "A100:1"}, "min_replicas": 3}
    )
    endpoint = EndpointView(
        name="serve",
        workspace="team-a",
        state=EndpointState.SCALING,
        path="/ep/serve/",
        revision=1,
        desired_replicas=3,
        ready_replicas=1,
        min_replicas=3,
        max_replicas=3,
        spec=spec,
        replicas=[
            EndpointReplicaView(job="serve-r1", revision=1, state="ready", node="gpu-9"),
        ],
        created_at=NOW - 7200,
        updated_at=NOW,
    )
    pod = PodView(
        name="devbox",
        workspace="team-a",
        state="stopped",
        spec=PodSpec.model_validate({"name": "devbox"}),
        stop_reason="idle for 2 h",
        created_at=NOW - 60,
    )
    e, p = view.rows([Listed("endpoint", endpoint), Listed("pod", pod)], NOW)
    assert e.href == "/ui/endpoints/team-a/serve"
    assert (e.gpus, e.where, e.state) == ("3 × A100", "gpu-9", "scaling")
    assert p.href is None  # no pod page yet
    assert (p.gpus, p.reason, p.state) == ("—", "idle for 2 h", "stopped")


def test_gpu_words() -> None:
    assert view.gpu_words(GpuRequest(count=0), 4) == ("—", "no GPUs")
    assert view.gpu_words(GpuRequest(count=2), 1) == ("2 × any GPU", "1 replica × 2 any GPU")


def test_the_query_is_checked_in_words() -> None:
    q = view.read_query("job", "pending", "team-a", None, "20")
    assert (q.kind, q.state, q.workspace, q.limit) == ("job", "pending", "team-a", 20)
    assert q.kinds == {"job"}
    assert view.read_query(None, "", "", "", None).kinds == {"job", "endpoint", "pod"}
    for args, field in [
        (("jobs", None, None, None, None), "kind"),
        (("job", "ready", None, None, None), "state"),  # an endpoint's state
        (("all", "sleeping", None, None, None), "state"),
        (("all", None, None, None, "0"), "limit"),
        (("all", None, None, None, "many"), "limit"),
        (("all", None, None, "x" * 600, None), "cursor"),
    ]:
        with pytest.raises(Invalid) as refused:
            view.read_query(*args)
        assert refused.value.fields[0]["path"] == field


def test_the_state_choices_follow_the_kind() -> None:
    assert "ready" in view.state_choices("endpoint") and "succeeded" not in view.state_choices(
        "endpoint"
    )
    assert view.state_choices("all")[:3] == ["pending", "starting", "running"]
    assert set(view.state_choices("pod")) == {
        "pending",
        "starting",
        "running",
        "stopping",
        "stopped",
        "failed",
    }


def test_a_workspace_token_is_offered_only_its_own_workspace() -> None:
    q = view.read_query(None, None, None, None, None)
    own = view.filters(q, ["team-b"], cluster_wide=False)
    assert [c.value for c in own.workspaces] == ["team-b"]
    every = view.filters(q, ["team-a", "team-b"], cluster_wide=True)
    assert [c.value for c in every.workspaces] == ["", "team-a", "team-b"]


def test_the_next_pages_url_keeps_the_filters() -> None:
    q = view.read_query("job", "failed", "team-a", None, "10")
    assert (
        q.url("abc") == "/ui/workloads?kind=job&state=failed&workspace=team-a&limit=10&cursor=abc"
    )


# -- the page, in-process -----------------------------------------------------------------


def _cp(server: TestClient) -> ControlPlane:
    cp: ControlPlane = server.app.state.cp  # type: ignore[attr-defined]
    return cp


def _names(page: str) -> list[str]:
    return re.findall(r'data-testid="workload-row" data-kind="[a-z]+" data-name="([^"]+)"', page)


def _next(page: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" data-testid="next-page"', page)
    return found.group(1).replace("&amp;", "&") if found else None


@pytest.fixture
def teams(server: TestClient) -> TestClient:
    """team-a: a pending job (more GPUs than exist), a running one, a failed one, an
    endpoint; team-b: a job of its own."""
    for name in ("team-a", "team-b"):
        assert server.post("/v1/workspaces", json={"name": name}, headers=ADMIN).status_code == 201
    jobs = "/v1/workspaces/team-a/jobs"
    big = {"name": "a-pending", "command": "true", "resources": {"gpus": "H100:64"}}
    assert server.post(jobs, json=big, headers=ADMIN).status_code == 201
    r = server.post(
        "/v1/workspaces/team-a/endpoints",
        json={"name": "a-serve", "command": "python -m http.server $PORT"},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    b = {"name": "b-job", "command": "true", "resources": {"gpus": "H100:64"}}
    assert server.post("/v1/workspaces/team-b/jobs", json=b, headers=ADMIN).status_code == 201
    cp = _cp(server)
    node = register_node(cp.store, "gpu-node-1", gpus=4)
    with cp.store.transaction() as session:
        team_a = workspace_by_name(session, "team-a")
        assert team_a is not None
        add_run(session, team_a.id, node, 2, cp.clock.now(), name="a-running")
        add_run(
            session,
            team_a.id,
            node,
            1,
            cp.clock.now() - 100,
            cp.clock.now() - 50,
            name="a-done",
            job_id="j2",
            replica_id="r2",
        )
    return server


def test_the_admin_sees_every_kind_newest_first(teams: TestClient) -> None:
    log_in(teams)
    page = teams.get("/ui/workloads")
    assert page.status_code == 200
    names = _names(page.text)
    assert set(names) == {"a-pending", "a-serve", "b-job", "a-running", "a-done"}
    # The endpoint's replica job is listed as the endpoint, not again as a job.
    assert not any(n.startswith("a-serve-") for n in names)
    assert '<a href="/ui/jobs/team-a/a-running">a-running</a>' in page.text
    assert '<a href="/ui/endpoints/team-a/a-serve">a-serve</a>' in page.text
    assert "total;dur=" in page.headers["server-timing"]


def test_filters_by_kind_state_and_workspace(teams: TestClient) -> None:
    log_in(teams)
    assert _names(teams.get("/ui/workloads?kind=endpoint").text) == ["a-serve"]
    pending = set(_names(teams.get("/ui/workloads?kind=job&state=pending").text))
    assert pending == {"a-pending", "b-job"}
    running = _names(teams.get("/ui/workloads?state=running").text)
    assert running == ["a-running"]
    assert set(_names(teams.get("/ui/workloads?workspace=team-b").text)) == {"b-job"}
    done = teams.get("/ui/workloads?state=succeeded&workspace=team-a")
    assert _names(done.text) == ["a-done"]
    assert '<option value="succeeded" selected>' in done.text


def test_pages_are_disjoint_and_cover_every_row(server: TestClient) -> None:
    cp = _cp(server)
    now = cp.clock.now()
    with cp.store.transaction() as session:
        ws = workspace_by_name(session, "default")
        assert ws is not None
        rows = [
            {
                "id": f"job-{i:04d}",
                "workspace_id": ws.id,
                "name": f"bulk-{i:04d}",
                "spec": {"name": f"bulk-{i:04d}", "command": "true"},
                "state": "succeeded" if i % 3 else "failed",
                "priority": 0,
                "attempt": 0,
                # Ties on the time too: the id orders them.
                "submitted_at": now - (i // 4),
                "version": 1,
            }
            for i in range(230)
        ]
        session.execute(insert(Job), rows)
    r = server.post(
        "/v1/workspaces/default/endpoints",
        json={"name": "serve", "command": "python -m http.server $PORT"},
        headers=ADMIN,
    )
    assert r.status_code == 201
    log_in(server)
    for start, expected in [
        ("/ui/workloads?limit=40", {f"bulk-{i:04d}" for i in range(230)} | {"serve"}),
        ("/ui/workloads?state=failed&limit=7", {f"bulk-{i:04d}" for i in range(0, 230, 3)}),
    ]:
        seen: list[str] = []
        url: str | None = start
        pages = 0
        while url:
            page = server.get(url)
            assert page.status_code == 200, page.text
            seen += _names(page.text)
            url = _next(page.text)
            pages += 1
        assert len(seen) == len(set(seen)), "a row came twice"
        assert set(seen) == expected
        assert pages > 3


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_a_workspace_token_never_sees_another_workspace(teams: TestClient, role: str) -> None:
    log_in(teams, new_token(teams, role, "team-b"))
    own = teams.get("/ui/workloads")
    assert own.status_code == 200
    assert _names(own.text) == ["b-job"]
    assert 'value="team-a"' not in own.text  # the filter offers only its own workspace
    for query in (
        "?workspace=team-a",
        "?workspace=team-a&kind=all&state=pending",
        "?workspace=team-a&kind=endpoint",
        "?workspace=nope",
    ):
        for headers in ({}, {"HX-Request": "true"}):
            answer = teams.get("/ui/workloads" + query, headers=headers)
            assert answer.status_code == 403, (query, answer.status_code)
            assert "a-" not in "".join(_names(answer.text))
            assert "a-pending" not in answer.text and "a-serve" not in answer.text
    for query in ("?kind=all", "?state=running", "?kind=endpoint", "?workspace=team-b"):
        answer = teams.get("/ui/workloads" + query)
        assert answer.status_code == 200
        assert "a-running" not in answer.text and "a-serve" not in answer.text


def test_bad_queries_read_as_a_page(teams: TestClient) -> None:
    log_in(teams)
    for query, words in [
        ("?kind=widgets", "kind: expected one of all, job, endpoint, pod"),
        ("?kind=job&state=ready", "jobs are never &#39;ready&#39;"),
        ("?state=sleeping", "workloads are never &#39;sleeping&#39;"),
        ("?cursor=garbage", "cursor: not a cursor this list gave out"),
        ("?cursor=WyJ4Il0", "cursor: not a cursor"),  # ["x"]: a cursor of another shape
        ("?limit=100000", "limit: rows per page"),
    ]:
        answer = teams.get("/ui/workloads" + query)
        assert answer.status_code == 422, query
        assert "text/html" in answer.headers["content-type"]
        assert words in answer.text, (query, answer.text[-800:])
        assert "Traceback" not in answer.text
    missing = teams.get("/ui/workloads?workspace=nope")
    assert missing.status_code == 404 and "workspace &#39;nope&#39; not found" in missing.text
