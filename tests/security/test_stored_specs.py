"""Tighter bounds on new specs never make a stored one unreadable: a job submitted under the
old bounds can still be listed, read, cancelled and scheduled, and a client reads it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from corral.client.wire import parse_view
from corral.server.services import specs
from corral.wire.api import JobList, JobView
from support.app import in_process

ADMIN = {"Authorization": "Bearer crl_admin"}
JOB = "/v1/workspaces/default/jobs"
BIG = {f"f{i}.txt": "x" * 100_000 for i in range(4)}  # 400 KB: over today's 256 KiB


def test_a_job_stored_under_older_bounds_stays_readable(database_url: str, tmp_path: Path) -> None:
    with in_process(database_url, tmp_path) as api:
        created = api.post(JOB, json={"name": "old", "command": "true"}, headers=ADMIN)
        assert created.status_code == 201
    # As if submitted before the bounds: the stored spec carries what is refused today.
    engine = create_engine(database_url)
    with engine.begin() as db:
        [(spec,)] = db.execute(text("SELECT spec FROM jobs WHERE name = 'old'"))
        stored = spec if isinstance(spec, dict) else json.loads(spec)
        stored["files"] = BIG
        db.execute(
            text("UPDATE jobs SET spec = :spec WHERE name = 'old'"), {"spec": json.dumps(stored)}
        )
    engine.dispose()
    specs._SPECS.clear()  # a new server process: nothing parsed yet (the cache is per process)
    with in_process(database_url, tmp_path) as api:
        check_readable(api)


def check_readable(api: TestClient) -> None:
    assert api.post(JOB, json={"command": "true", "files": BIG}, headers=ADMIN).status_code == 422

    one = api.get(f"{JOB}/old", headers=ADMIN)
    assert one.status_code == 200, one.text
    assert set(parse_view(JobView, one.json()).spec.files) == set(BIG)
    listed = api.get(JOB, headers=ADMIN)
    assert listed.status_code == 200, listed.text
    assert [j.name for j in parse_view(JobList, listed.json()).jobs] == ["old"]
    cancelled = api.post(f"{JOB}/old/cancel", headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.text


def test_a_stored_unsafe_path_parses_and_the_node_refuses_to_write_it(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from corral.agent.sandbox.files import write_files
    from corral.spec.job import JobSpec
    from corral.spec.limits import STORED

    with pytest.raises(ValidationError):  # refused as input
        JobSpec.model_validate({"command": "true", "files": {"../x": ""}})
    # Read back (accepted by an older server): listable, cancellable, deletable...
    spec = JobSpec.model_validate({"command": "true", "files": {"../x": ""}}, context=STORED)
    # ...and refused where it would act.
    (tmp_path / "work").mkdir()
    with pytest.raises(ValueError, match="relative path"):
        write_files(tmp_path / "work", spec.files)
    assert not (tmp_path / "x").exists()


def test_an_endpoint_stored_under_older_bounds_still_gets_replicas() -> None:
    from types import SimpleNamespace

    from corral.server.services.endpoints import replica_job_spec
    from corral.spec.endpoint import EndpointSpec
    from corral.spec.limits import STORED

    spec = EndpointSpec.model_validate(
        {"name": "old", "command": "serve", "files": BIG}, context=STORED
    )
    endpoint = SimpleNamespace(name="old", revision=3)
    job = replica_job_spec(endpoint, spec)  # type: ignore[arg-type]
    assert set(job.files) == set(BIG) and job.name is not None and job.name.startswith("old-r3-")
