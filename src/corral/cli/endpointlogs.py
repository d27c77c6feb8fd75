"""`corral endpoint logs`: which replica's job to read.

Each replica of an endpoint is a job of one replica, so its log is that job's log, read
by `jobfollow.stream` as `corral job logs` reads it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from corral.cli.output import CliError

if TYPE_CHECKING:
    from corral.client import Client
    from corral.wire.api import EndpointReplicaView, EndpointView, JobView

# The server names a replica's job NAME-rREVISION-XXXXXX (NAME cut to fit 63 characters).
_REPLICA_JOB = re.compile(r"^(?P<base>.+)-r(?P<revision>\d+)-[0-9a-f]{6}$")


def pick_replica_job(client: Client, name: str, index: int | None) -> tuple[str, str]:
    """(job name, a line saying which replica that is) for `corral endpoint logs NAME`.

    --replica N: the N-th live replica, in `corral endpoint get` order. Default: the first
    ready one, else the first live one, else the last one that ended (a replica that keeps
    crashing is replaced by a new job: its log is the one that says why).
    """
    view = client.get_endpoint(name)
    live = view.replicas
    if index is not None:
        if index >= len(live):
            have = f"0..{len(live) - 1}" if live else "none"
            raise CliError(
                f"--replica {index}: endpoint {name} has {len(live)} live replicas ({have})",
                code=2,
                hint=f"see them: corral endpoint get {name}",
            )
        return live[index].job, _describe(index, live[index])
    ready = [i for i, r in enumerate(live) if r.state == "ready"]
    if ready or live:
        i = ready[0] if ready else 0
        return live[i].job, _describe(i, live[i])
    ended = _ended_replica_jobs(client, view)
    if ended:
        job = ended[-1]
        how = f"{job.state}" + (f", exit code {job.exit_code}" if job.exit_code is not None else "")
        return (
            job.name,
            f"endpoint {name} has no live replica; the last one was job {job.name} ({how})",
        )
    why = f": {view.reason}" if view.reason and view.reason != view.state else ""
    raise CliError(f"endpoint {name} has no replicas yet ({view.state}{why})")


def _describe(index: int, replica: EndpointReplicaView) -> str:
    where = f"on {replica.node}" if replica.node else "not placed yet"
    state = f"revision {replica.revision}, {replica.state}, {where}"
    return f"replica {index}: job {replica.job} ({state})"


def _ended_replica_jobs(client: Client, view: EndpointView) -> list[JobView]:
    """The endpoint's replica jobs that have ended, oldest first, found by their names.

    The job views do not say which endpoint a job serves; the name the server gives a
    replica's job does, unless a user named a job of their own just like it."""
    from corral.wire.api import TERMINAL_JOB_STATES

    found = []
    for job in client.list_jobs(kind="endpoint-replica"):
        m = _REPLICA_JOB.match(job.name)
        if m is None or job.state not in TERMINAL_JOB_STATES:
            continue  # a replacement still waiting to start has no story to tell yet
        suffix = f"-r{m['revision']}-xxxxxx"
        if m["base"] == view.name[: 63 - len(suffix)].rstrip("-"):
            found.append(job)
    return sorted(found, key=lambda j: j.submitted_at)
