"""Parsed job specs, by job id: a job's spec never changes after submission, and parsing
it is most of what reading a job costs, so each process keeps what it parsed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.server.store.db import in_chunks
from corral.server.store.tables import Job
from corral.spec.job import JobSpec
from corral.spec.limits import STORED

_SPECS_MAX = 200_000
_SPECS: dict[str, JobSpec] = {}  # shared by every reader in the process


def job_spec(job: Job) -> JobSpec:
    spec = _SPECS.get(job.id)
    if spec is None:
        spec = _remember_spec(job.id, job.spec)
    return spec


def _remember_spec(job_id: str, raw: Mapping[str, Any]) -> JobSpec:
    spec = JobSpec.model_validate(raw, context=STORED)
    if len(_SPECS) >= _SPECS_MAX:
        # Insertion order is age: drop the oldest half (from a copy of the keys: other
        # threads read and add meanwhile, and a dropped spec is only parsed again).
        for old in list(_SPECS)[: _SPECS_MAX // 2]:
            _SPECS.pop(old, None)
    _SPECS[job_id] = spec
    return spec


def specs_by_id(session: Session, job_ids: Sequence[str]) -> dict[str, JobSpec]:
    """Each job's parsed spec: from the cache, the others read in bulk."""
    found = {i: spec for i in job_ids if (spec := _SPECS.get(i)) is not None}
    missing = [i for i in job_ids if i not in found]
    for chunk in in_chunks(missing):
        for job_id, raw in session.execute(select(Job.id, Job.spec).where(Job.id.in_(chunk))):
            found[job_id] = _remember_spec(job_id, raw)
    return found
