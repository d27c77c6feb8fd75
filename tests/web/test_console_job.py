"""The job page: its view model (timeline geometry, outcomes, goodput, progress) and the
page, its fragment, its series and its log stream through the real app."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from corral.core.states import JobState, ReplicaState
from corral.server.services.job_history import AttemptMarks, AttemptRun
from corral.server.store.tables import Attempt, Job, Replica
from corral.spec.job import JobSpec
from corral.web.views import job as views
from corral.wire.api import AttemptView, GoodputView, JobView
from corral.wire.pools import CostView
from support.cli import ADMIN, JOBS, UNPLACEABLE, finish_job, submit_job
from support.console import log_in, new_token
from support.store import register_node

# -- the view model -------------------------------------------------------------------------


def job_view(state: JobState = JobState.RUNNING, **fields: Any) -> JobView:
    values: dict[str, Any] = {
        "name": "train",
        "workspace": "default",
        "state": state,
        "spec": JobSpec(name="train", command="python train.py"),
        "attempt": 2,
        "restarts": 0,
        "submitted_at": 0.0,
        **fields,
    }
    return JobView(**values)


def run(attempt: int, rank: int, node: str, progress_at: float | None = None) -> AttemptRun:
    return AttemptRun(
        attempt, rank, node, ReplicaState.RUNNING, None, progress_at, None, None, None, None
    )


LOST_THEN_RUNNING = [
    AttemptView(
        attempt=1,
        replicas=2,
        started_at=10.0,
        ended_at=40.0,
        end_cause="node_lost",
        reason="node node-b stopped answering",
        start_step=0,
        step=300,
        checkpoint_step=200,
    ),
    AttemptView(attempt=2, replicas=2, started_at=50.0, start_step=200, step=450),
]
RUNS = [run(1, 0, "node-a"), run(1, 1, "node-b"), run(2, 0, "node-c"), run(2, 1, "node-c")]


def test_bars_are_placed_in_percent_of_one_axis_and_a_running_attempt_reaches_now() -> None:
    t = views.timeline(job_view(attempts=LOST_THEN_RUNNING), RUNS, now=110.0)
    assert t is not None
    assert (t.start, t.end) == (0.0, 110.0)  # from the submission to now
    first, second = t.bars
    assert (first.left, first.width) == (pytest.approx(9.091), pytest.approx(27.273))
    assert (first.kind, first.outcome) == ("ended-bad", "node lost")
    assert first.reason == "node node-b stopped answering"
    assert first.nodes == ("node-a", "node-b") and first.steps == "0 → 300"
    assert (second.left, second.width) == (pytest.approx(45.455), pytest.approx(54.545))
    assert second.left + second.width == pytest.approx(100.0)
    assert (second.kind, second.outcome, second.duration_s) == ("running", "running", 60.0)
    assert second.nodes == ("node-c",)  # a node holding two replicas is named once
    assert [tick.label for tick in t.ticks] == ["00:00:00 UTC", "+28 s", "+55 s", "+82 s", "+1.8 m"]
    assert [tick.left for tick in t.ticks] == [0.0, 25.0, 50.0, 75.0, 100.0]


def test_an_ended_job_ends_its_axis_at_its_end_and_its_last_attempt_as_it_did() -> None:
    attempts = [
        LOST_THEN_RUNNING[0],
        AttemptView(attempt=2, replicas=2, started_at=50.0, ended_at=90.0, start_step=200),
    ]
    done = job_view(JobState.SUCCEEDED, attempts=attempts, finished_at=90.0)
    t = views.timeline(done, RUNS, now=1000.0)
    assert t is not None and t.end == 90.0
    assert (t.bars[1].kind, t.bars[1].outcome) == ("ok", "succeeded")
    assert t.bars[1].left + t.bars[1].width == pytest.approx(100.0)
    cancelled = views.timeline(
        job_view(JobState.CANCELLED, attempts=attempts, finished_at=90.0), RUNS, now=1000.0
    )
    assert cancelled is not None
    assert (cancelled.bars[1].kind, cancelled.bars[1].outcome) == ("stopped", "cancelled")
    preempted = AttemptView(
        attempt=1, replicas=1, started_at=0.0, ended_at=5.0, end_cause="preempted"
    )
    t = views.timeline(job_view(JobState.PENDING, attempts=[preempted]), [], now=10.0)
    assert t is not None and (t.bars[0].kind, t.bars[0].outcome) == ("preempted", "preempted")
    assert views.timeline(job_view(JobState.PENDING, attempt=0), [], now=10.0) is None


def test_many_nodes_are_named_up_to_a_few_and_counted_beyond() -> None:
    runs = [run(1, rank, f"n{rank}") for rank in range(9)]
    a = AttemptView(attempt=1, replicas=9, started_at=0.0)
    t = views.timeline(job_view(attempt=1, attempts=[a]), runs, now=1.0)
    assert t is not None
    assert t.bars[0].nodes == ("n0", "n1", "n2", "n3", "n4", "n5") and t.bars[0].more_nodes == 3


def test_goodput_reads_as_ettr_and_lost_time_by_cause_largest_first() -> None:
    g = views.goodput(
        GoodputView(
            ettr=0.8754,
            wall_s=1000.0,
            productive_s=875.4,
            startup_s=20.0,
            lost_by_cause={"gpu_xid": 30.0, "node_lost": 70.0, "hang": 0.0},
        )
    )
    assert g is not None and g.ettr == "87.5%"
    assert [(x.cause, x.seconds, x.share) for x in g.lost] == [
        ("node lost", 70.0, 0.07),
        ("GPU error (Xid)", 30.0, 0.03),
    ]
    assert g.lost_s == 100.0
    assert views.goodput(None) is None
    assert views.goodput(GoodputView(ettr=0, wall_s=0, productive_s=0, startup_s=0)) is None
    assert views.ettr_text(1.0) == "100.0%"


def test_cost_reads_as_the_cli_says_it() -> None:
    priced = CostView(gpu_hours=3.14, usd=12.4)
    assert (views.cost_text(priced), views.cost_note(priced)) == ("$12.40", "3.1 GPU-hours")
    unpriced = CostView(gpu_hours=0.05, usd=None, unpriced_gpu_hours=0.05)
    assert (views.cost_text(unpriced), views.cost_note(unpriced)) == (
        "0.050 GPU-hours",
        "its nodes have no price",
    )
    partly = CostView(gpu_hours=2.0, usd=None, unpriced_gpu_hours=0.5)
    assert views.cost_note(partly) == "0.5 of them on nodes with no price, so no total"
    assert views.cost_text(None) is None and views.cost_note(None) is None


def test_progress_is_a_line_per_attempt_with_gaps_and_checkpoints() -> None:
    runs = [run(1, 0, "a", progress_at=38.0), run(2, 0, "c", progress_at=100.0)]
    marks = {1: AttemptMarks(15.0, 30.0), 2: AttemptMarks(60.0, None)}
    series = views.progress_series(LOST_THEN_RUNNING, runs, marks, now=110.0)
    step, checkpoint = series["series"]
    points = list(zip(series["x"], step["values"], checkpoint["values"], strict=True))
    assert points == [
        (10.0, 0.0, None),  # attempt 1 starts from step 0
        (15.0, 0.0, None),  # its start-up ends at its first new step
        (30.0, None, 200.0),  # its checkpoint of step 200
        (38.0, 300.0, None),  # its last step, when it was reported
        (44.0, None, None),  # no line across attempts
        (50.0, 200.0, None),  # attempt 2 resumes from the checkpoint
        (60.0, 200.0, None),
        (100.0, 450.0, None),
    ]
    assert series["x"] == sorted(series["x"])
    none = views.progress_series([AttemptView(attempt=1, replicas=1, started_at=0)], [], {}, 5)
    assert none["x"] == []


def test_the_spec_reads_as_yaml_without_empty_fields() -> None:
    spec = JobSpec(name="train", command="import time\nprint(1)", resources={"gpus": "H100:1"})
    text = views.spec_yaml(job_view(spec=spec))
    assert "command: |-\n  import time\n  print(1)\n" in text
    assert "env:" not in text and "args:" not in text
    assert "type: H100" in text


def test_the_pending_reason_has_words_even_before_the_scheduler_looked() -> None:
    page = views.build(job_view(JobState.PENDING, attempt=0), [], 5.0, can_act=True)
    assert page.reason == "waiting for the scheduler" and page.pending
    assert page.can_cancel and page.replica_ranks == (0,)
    done = views.build(job_view(JobState.SUCCEEDED, finished_at=3.0), [], 5.0, can_act=True)
    assert not done.can_cancel and done.finished
    assert not views.build(job_view(), [], 5.0, can_act=False).can_cancel


# -- through the app ------------------------------------------------------------------------

PAGE = "/ui/jobs/default/{}"


def token(server: TestClient, role: str, workspace: str) -> str:
    if workspace != "default":
        server.post("/v1/workspaces", json={"name": workspace}, headers=ADMIN)
    return new_token(server, role, workspace)


def events(body: str) -> list[tuple[str, str]]:
    """(event, data) of each server-sent event (comments and retry lines left out)."""
    out = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.split("\n") if ": " in line and line[0] != ":"
        )
        if "data" in fields:
            out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


def test_a_pending_job_shows_its_state_reason_spec_and_polls(admin: TestClient) -> None:
    submit_job(admin, "big", command="python train.py --lr 3e-4", **UNPLACEABLE)
    page = admin.get(PAGE.format("big"))
    assert page.status_code == 200
    text = page.text
    assert 'data-testid="job-name">big<' in text
    assert '<span class="badge pending">pending</span>' in text
    assert "Pending: </strong>" in text
    assert "python train.py --lr 3e-4" in text
    assert "count: 64" in text  # the spec's YAML
    assert 'hx-get="/ui/jobs/default/big/summary"' in text and 'hx-trigger="every 3s"' in text
    assert 'data-stream="/ui/jobs/default/big/logs/stream?replica=0"' in text
    assert 'data-testid="cancel"' in text  # an admin may cancel
    assert "/static/job.css" in text
    fragment = admin.get(PAGE.format("big") + "/summary", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith("{#") is False
    assert 'id="summary"' in fragment.text and "<html" not in fragment.text


def test_an_unknown_job_or_workspace_is_a_404_page(admin: TestClient) -> None:
    assert admin.get(PAGE.format("nope")).status_code == 404
    missing = admin.get("/ui/jobs/nowhere/x")
    assert missing.status_code == 404 and "workspace &#39;nowhere&#39; not found" in missing.text
    assert admin.get(PAGE.format("nope") + "/logs/stream").status_code == 404


def finished_with_two_attempts(server: TestClient) -> None:
    """Job `train`: attempt 1 on node-a lost its node, attempt 2 on node-b succeeded."""
    submit_job(server, "train", command="python train.py")
    finish_job(server, "train", {0: ["line one\n", "line two\n"]}, nodes=["node-b"])
    store = server.app.state.cp.store  # type: ignore[attr-defined]
    node_a = register_node(store, "node-a")
    with store.transaction() as session:
        job = session.scalars(select(Job).where(Job.name == "train")).one()
        job.attempt, job.started_at, job.finished_at = 2, 10.0, 100.0
        session.execute(
            Replica.__table__.update().where(Replica.job_id == job.id).values(attempt=2)
        )
        session.add(
            Replica(
                id="train-old",
                job_id=job.id,
                attempt=1,
                rank=0,
                node_id=node_a,
                gpus=[],
                cpus=1,
                memory_mb=1,
                disk_mb=0,
                state=ReplicaState.LOST,
                desired="run",
                created_at=10.0,
            )
        )
        session.add(
            Attempt(
                job_id=job.id,
                attempt=1,
                replicas=1,
                started_at=10.0,
                ended_at=40.0,
                end_cause="node_lost",
                reason="node node-a stopped answering",
                start_step=0,
                step=300,
                first_step_at=15.0,
            )
        )
        session.add(
            Attempt(job_id=job.id, attempt=2, replicas=1, started_at=50.0, ended_at=100.0, step=600)
        )


def test_a_finished_job_shows_its_attempts_where_they_ran_and_why_they_ended(
    admin: TestClient,
) -> None:
    finished_with_two_attempts(admin)
    text = admin.get(PAGE.format("train")).text
    assert '<span class="badge succeeded">succeeded</span>' in text
    assert 'data-testid="attempt-1" data-kind="ended-bad"' in text
    assert 'data-testid="attempt-2" data-kind="ok"' in text
    assert "node lost" in text and "node node-a stopped answering" in text
    assert '<a href="/ui/nodes/node-a">node-a</a>' in text  # where attempt 1 ran
    assert '<a href="/ui/nodes/node-b">node-b</a>' in text
    assert "steps 0 → 300" in text
    assert 'data-testid="goodput"' in text and "node lost" in text
    assert 'data-testid="progress-chart"' in text
    assert "hx-trigger" not in text  # nothing to poll once it has ended
    assert 'data-testid="cancel"' not in text
    series = admin.get(PAGE.format("train") + "/progress").json()
    assert series["series"][0]["values"][-1] == 600.0
    assert len(series["x"]) == len(series["series"][0]["values"]) >= 4


def test_the_stream_sends_a_finished_replicas_log_and_ends(admin: TestClient) -> None:
    finished_with_two_attempts(admin)
    answer = admin.get(PAGE.format("train") + "/logs/stream?replica=0")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    got = events(answer.text)
    assert got[0] == ("message", "line one\nline two\n")
    assert got[-1] == ("end", "end of log: the job succeeded")
    assert "id: 2:18" in answer.text  # where a reconnecting browser goes on from
    again = admin.get(
        PAGE.format("train") + "/logs/stream?replica=0", headers={"Last-Event-ID": "2:9"}
    )
    assert events(again.text) == [
        ("message", "line two\n"),
        ("end", "end of log: the job succeeded"),
    ]
    assert admin.get(PAGE.format("train") + "/logs/stream?replica=1").status_code == 404


def test_a_long_log_streams_its_last_part_first(admin: TestClient) -> None:
    line = "x" * 1023 + "\n"
    submit_job(admin, "chatty")
    finish_job(admin, "chatty", {0: [f"{i:04d}{line[4:]}" for i in range(400)]})
    answer = admin.get(PAGE.format("chatty") + "/logs/stream?replica=0")
    got = events(answer.text)
    assert got[0][0] == "message" and "the first 144 KiB are not shown" in got[0][1]
    text = "".join(data for kind, data in got[1:] if kind == "message")
    assert text.startswith("0144") and text.endswith("0399" + line[4:])
    assert len(text) == 256 * 1024
    assert got[-1][0] == "end"


def test_another_workspaces_token_gets_nothing_through_any_url(server: TestClient) -> None:
    submit_job(server, "secret-job", **UNPLACEABLE)
    finish_job(server, "secret-job", {0: ["private data\n"]})
    log_in(server, token(server, "admin", "team-b"))
    base = PAGE.format("secret-job")
    for url in (base, base + "/summary", base + "/progress", base + "/logs/stream?replica=0"):
        answer = server.get(url)
        assert answer.status_code == 403, url
        assert "secret-job" not in answer.text and "private data" not in answer.text
    # Its own workspace's job of that name does not exist: the same words as any 404.
    assert server.get("/ui/jobs/team-b/secret-job").status_code == 404
    csrf = log_in(server, token(server, "admin", "team-b"))
    refused = server.post(base + "/cancel", headers={"x-csrf-token": csrf})
    assert refused.status_code == 403


def test_a_viewer_sees_no_cancel_and_cannot_cancel_a_member_can(server: TestClient) -> None:
    submit_job(server, "queued", **UNPLACEABLE)
    csrf = log_in(server, token(server, "viewer", "default"))
    page = server.get(PAGE.format("queued"))
    assert page.status_code == 200 and 'data-testid="cancel"' not in page.text
    refused = server.post(PAGE.format("queued") + "/cancel", headers={"x-csrf-token": csrf})
    assert refused.status_code == 403
    csrf = log_in(server, token(server, "member", "default"))
    assert server.post(PAGE.format("queued") + "/cancel").status_code == 403  # no CSRF token
    done = server.post(
        PAGE.format("queued") + "/cancel", headers={"x-csrf-token": csrf, "HX-Request": "true"}
    )
    assert done.status_code == 200
    assert '<span class="badge cancelled">cancelled</span>' in done.text
    assert "hx-trigger" not in done.text
    job = server.get("/v1/workspaces/default/jobs/queued", headers=ADMIN).json()
    assert job["state"] == "cancelled" and job["reason"] == "cancelled by user"


def test_an_endpoints_replica_job_links_to_its_endpoint(admin: TestClient) -> None:
    body = {"name": "serve", "command": "python -m http.server $PORT"}
    assert (
        admin.post("/v1/workspaces/default/endpoints", json=body, headers=ADMIN).status_code == 201
    )
    deadline = time.monotonic() + 10
    while not (jobs := admin.get(JOBS + "?kind=endpoint-replica", headers=ADMIN).json()["jobs"]):
        assert time.monotonic() < deadline, "the endpoint controller made no replica job"
        time.sleep(0.05)
    page = admin.get(PAGE.format(jobs[0]["name"]))
    assert (
        '<a href="/ui/endpoints/default/serve" data-testid="endpoint-link">serve</a>' in page.text
    )


def test_a_stream_ends_when_its_session_does(
    admin: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiting job's stream would run for minutes; the session is checked again on the
    way, and a token revoked meanwhile ends it."""
    from corral.web.pages import job as job_page
    from corral.web.session import LoginNeeded

    pending = {"name": "waits", "command": "true", "resources": {"gpus": "H100:64"}}
    assert admin.post(JOBS, json=pending, headers=ADMIN).status_code == 201

    async def revoked(_: object) -> None:
        raise LoginNeeded("/ui/", refused=True)

    monkeypatch.setattr(job_page, "RECHECK_S", 0.0)
    monkeypatch.setattr(job_page, "visitor", revoked)
    answer = admin.get(PAGE.format("waits") + "/logs/stream?replica=0")
    assert events(answer.text)[-1] == ("end", "the session has ended: log in again")
