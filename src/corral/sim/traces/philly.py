"""The Philly-derived job list (as published with the SOSP'23 Sia artifacts).

CSV columns `timestamp,duration,num_gpus,gpu_time,cluster`: submit time
`YYYY-MM-DD HH:MM:SS` (read as UTC), run time in seconds, GPUs, GPU-seconds, virtual cluster
(a tenant, here a workspace). Rows are not sorted; jobs are returned by submit time, ties in
file order.
The format has no priorities, CPUs or runtime estimates: every job gets priority 0, is not
preemptible, and is told its true run time x `estimate_factor` as its estimate.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from corral.sim.traces.base import LoadedTrace, number, read_rows
from corral.sim.workload import Job, gang_shape
from corral.spec.errors import FieldError, SpecError

COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _timestamp(path: Path, line: int, text: str) -> float:
    try:
        return datetime.strptime(text.strip(), TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise SpecError(
            str(path),
            [FieldError(f"line {line}: timestamp", f"expected YYYY-MM-DD HH:MM:SS, got {text!r}")],
        ) from None


def load_philly_csv(
    path: str | Path,
    *,
    node_gpus: int = 8,
    estimate_factor: float = 1.0,
    max_jobs: int | None = None,
) -> LoadedTrace:
    """Jobs from a Philly-format CSV; gangs are shaped for nodes of `node_gpus`.

    Submit times are made relative to the earliest job. `max_jobs` keeps the earliest ones.
    """
    path = Path(path)
    rows: list[tuple[float, int, float, int, str]] = []
    for line, row in read_rows(path, ("timestamp", "duration", "num_gpus")):
        submit = _timestamp(path, line, row["timestamp"])
        duration = number(path, line, row, "duration")
        gpus = number(path, line, row, "num_gpus")
        if gpus != int(gpus):
            raise SpecError(
                str(path),
                [FieldError(f"line {line}: num_gpus", f"expected a whole number, got {gpus:g}")],
            )
        cluster = (row.get("cluster") or "").strip() or "default"
        rows.append((submit, line, duration, int(gpus), cluster))
    rows.sort()
    if max_jobs is not None:
        rows = rows[:max_jobs]
    start = rows[0][0] if rows else 0.0
    jobs: list[Job] = []
    reshaped = 0
    for submit, line, duration, gpus, cluster in rows:
        replicas, per = gang_shape(gpus, node_gpus)
        reshaped += replicas * per != gpus
        jobs.append(
            Job(
                id=f"philly-{line:07d}",
                submit_s=submit - start,
                duration_s=duration,
                replicas=replicas,
                gpus=per,
                workspace=cluster,
                estimate_s=duration * estimate_factor,
            )
        )
    notes = [f"philly: {len(jobs)} jobs from {path.name}; gangs of ≤{node_gpus} GPUs per node"]
    if reshaped:
        notes.append(f"philly: {reshaped} jobs rounded up to equal replicas")
    return LoadedTrace(jobs, notes)


def write_philly_csv(
    jobs: Iterable[Job], path: str | Path, *, start: str = "2017-10-01 00:00:00"
) -> None:
    """Write jobs in the Philly-derived schema (for tests and benchmarks: data is not shipped)."""
    origin = datetime.strptime(start, TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    with Path(path).open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(COLUMNS)
        for j in jobs:
            stamp = datetime.fromtimestamp(origin + j.submit_s, UTC).strftime(TIME_FORMAT)
            duration = int(j.duration_s)
            out.writerow([stamp, duration, j.total_gpus, duration * j.total_gpus, j.workspace])
