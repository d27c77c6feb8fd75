"""GET /metrics on SQLite and PostgreSQL: the exposition parses, and its figures are the
fleet that was set up (nodes, GPUs, Xids, failing checks, jobs, attempts, ETTR)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from corral.server.metrics import Figures, families, read_figures
from corral.server.services import jobs
from corral.server.services.identity import DEFAULT_WORKSPACE, bootstrap, workspace_by_name
from corral.server.services.recovery import attempt_views
from corral.server.store.db import Store
from corral.server.store.migrate import upgrade
from corral.server.store.tables import Attempt, HealthEvent, Job, Node
from corral.spec import parse_job_spec
from support.app import in_process
from support.cli import ADMIN, submit_job
from support.cluster import wait_for
from support.store import register_node

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and every family's type."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def of(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with in_process(database_url, tmp_path) as client:
        yield client


def scrape(api: TestClient) -> tuple[Samples, dict[str, str]]:
    r = api.get("/metrics", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(r.text)


def test_the_figures_are_the_fleet_that_was_set_up(api: TestClient) -> None:
    store: Store = api.app.state.cp.store  # type: ignore[attr-defined]
    n1 = register_node(store, "n1", gpus=2)
    n2 = register_node(store, "n2", gpus=2)
    with store.transaction() as session:
        ready, cordoned = session.get(Node, n1), session.get(Node, n2)
        assert ready is not None and cordoned is not None
        # A finding on a healthy node is no failing check.
        ready.health = {"health": "healthy", "findings": [{"signal": "thermal", "health": "ok"}]}
        cordoned.condition = "cordoned"  # type: ignore[assignment]
        cordoned.health = {
            "health": "unhealthy",
            "repair": "reset-gpu",
            "gpus": [{"index": 0, "uuid": "n2-0", "health": "unhealthy", "repair": "reset-gpu"}],
            "findings": [
                {"gpu": 0, "signal": "xid", "health": "unhealthy", "code": 79},
                {"gpu": None, "signal": "pcie", "health": "degraded"},
            ],
        }
        for kind, code in (("xid", 79), ("xid", 48), ("xid", 48), ("sxid", 12)):
            session.add(
                HealthEvent(
                    node_id=n2, at=1.0, kind=kind, gpu_index=0, code=code, text=f"{kind} {code}"
                )
            )
    submit_job(api, "train", resources={"gpus": "H100:1"})
    submit_job(api, "big", resources={"gpus": "H100:64"})  # more than any node has
    wait_for(
        "the scheduler to place train",
        lambda: (
            api.get("/v1/workspaces/default/jobs/train", headers=ADMIN).json()["state"] != "pending"
        ),
    )

    samples, types = scrape(api)
    assert of(samples, "corral_nodes") == {
        frozenset({("condition", "ready"), ("health", "healthy")}): 1,
        frozenset({("condition", "cordoned"), ("health", "unhealthy")}): 1,
    }
    gpus = {tuple(sorted(k)): v for k, v in of(samples, "corral_gpus").items()}
    assert gpus == {
        (("health", "healthy"), ("model", "H100"), ("state", "allocated")): 1,  # train's
        (("health", "healthy"), ("model", "H100"), ("state", "idle")): 1,
        # n2's GPU 0 judged unhealthy; GPU 1 has no judgement: its inventory says healthy
        (("health", "unhealthy"), ("model", "H100"), ("state", "cordoned")): 1,
        (("health", "healthy"), ("model", "H100"), ("state", "cordoned")): 1,
    }
    assert types["corral_gpu_xids"] == "counter"
    assert of(samples, "corral_gpu_xids_total") == {
        frozenset({("code", "79")}): 1,
        frozenset({("code", "48")}): 2,  # the sxid is not an Xid
    }
    assert of(samples, "corral_health_checks_failing") == {
        frozenset({("signal", "xid"), ("health", "unhealthy")}): 1,
        frozenset({("signal", "pcie"), ("health", "degraded")}): 1,
    }
    assert sample(samples, "corral_jobs", state="pending") == 1
    placed = sum(sample(samples, "corral_jobs", state=s) or 0 for s in ("starting", "running"))
    assert placed == 1
    assert sample(samples, "corral_jobs", state="succeeded") == 0  # every state, zeros too
    assert sample(samples, "corral_queue_length") == 1
    # train's first attempt has just begun and nothing has ended: all its time is work.
    assert sample(samples, "corral_fleet_ettr") == pytest.approx(1.0, abs=0.05)
    assert of(samples, "corral_attempts_ended_total") == {}
    assert types["corral_controller_round_seconds"] == "histogram"


def test_the_controllers_round_times_are_observed(api: TestClient) -> None:
    def rounds() -> float | None:
        samples, _ = scrape(api)
        return sample(samples, "corral_controller_round_seconds_count", controller="scheduler")

    # The scheduler runs a round at start-up and on every submission.
    submit_job(api, "a", resources={"gpus": "H100:64"})
    assert wait_for("a scheduler round to be timed", rounds) >= 1


def test_an_empty_fleet_scrapes_with_no_ettr(api: TestClient) -> None:
    samples, types = scrape(api)
    assert sample(samples, "corral_queue_length") == 0
    assert of(samples, "corral_nodes") == {} and of(samples, "corral_gpus") == {}
    assert "corral_fleet_ettr" in types and of(samples, "corral_fleet_ettr") == {}


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(database_url)
    upgrade(s.engine)
    bootstrap(s, 1000.0, tmp_path, "crl_admin", "crj_join")
    yield s
    s.close()


def test_ettr_and_ended_attempts_are_what_the_jobs_attempts_say(store: Store) -> None:
    with store.transaction() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        for name in ("t", "done"):
            spec = {"name": name, "command": "x", "resources": {"gpus": "H100:1"}}
            jobs.submit_job(session, ws, parse_job_spec(spec), 900.0)
    with store.transaction() as session:
        ids = {name: id_ for name, id_ in session.execute(select(Job.name, Job.id))}
        done = session.get(Job, ids["done"])
        assert done is not None
        done.state = "succeeded"  # type: ignore[assignment]
        done.finished_at = 950.0
        # `done` is over: its lost attempt counts as ended, but not in the fleet's ETTR.
        session.add(
            Attempt(
                job_id=ids["done"],
                attempt=1,
                replicas=1,
                started_at=900.0,
                ended_at=910.0,
                end_cause="node_lost",
            )
        )
        # t: 10 s start-up, work to a checkpoint at 1080, lost to an Xid at 1100; again
        # at 1120, working from 1130 on. At 1200: 70 + 70 s productive of 200 s.
        session.add_all(
            [
                Attempt(
                    job_id=ids["t"],
                    attempt=1,
                    replicas=1,
                    started_at=1000.0,
                    first_step_at=1010.0,
                    ended_at=1100.0,
                    end_cause="gpu_xid",
                    checkpoint_step=5,
                    checkpoint_at=1080.0,
                    start_step=0,
                ),
                Attempt(
                    job_id=ids["t"],
                    attempt=2,
                    replicas=1,
                    started_at=1120.0,
                    first_step_at=1130.0,
                    start_step=5,
                ),
            ]
        )
    with store.read() as session:
        figures = read_figures(session, 1200.0)
        job = session.get(Job, ids["t"])
        assert job is not None
        _, shown = attempt_views(session, job, 1200.0)
    assert figures.ettr == pytest.approx(0.7)
    assert shown is not None and shown.ettr == pytest.approx(figures.ettr)  # as job show says
    assert figures.attempts_ended == {"gpu_xid": 1, "node_lost": 1}
    registry = CollectorRegistry()
    registry.register(Fixed(figures))
    samples, _ = parse(generate_latest(registry).decode())
    assert sample(samples, "corral_attempts_ended_total", cause="gpu_xid") == 1
    assert sample(samples, "corral_fleet_ettr") == pytest.approx(0.7)


class Fixed:
    """A collector of figures already read."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        return families(self.figures)
