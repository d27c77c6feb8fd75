"""Running a job file again: `corral job run examples/ddp.yaml` twice must just work.

A job name is unique in its workspace (it names the job's checkpoints and logs), so the
second run of a file that names its job cannot take that name while the first is kept for
its history. When the job of that name has ended, this run takes the next free name
(`ddp-2`, `ddp-3`, ...) and says so; a job of that name still at work is a conflict, as is
a name given with --name (the user chose it: nothing is renamed behind their back).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.client import Client
    from corral.spec import JobSpec
    from corral.wire.api import JobView

MAX_RERUNS = 100  # names tried before the conflict is reported as it is


def submit(client: Client, spec: JobSpec, *, renamable: bool) -> tuple[JobView, str | None]:
    """Submit `spec`; with `renamable`, under a free name if its own belongs to an ended
    job. Returns the job and, when it was renamed, the sentence that says why."""
    from corral.client import Conflict, NotFound
    from corral.spec.names import MAX_NAME_LENGTH
    from corral.wire.api import TERMINAL_JOB_STATES

    try:
        return client.submit_job(spec), None
    except Conflict:
        if not renamable or spec.name is None:
            raise
        first = spec.name
        try:
            taken = client.get_job(first)
        except NotFound:  # gone meanwhile: the conflict was about something else
            raise
        if taken.state not in TERMINAL_JOB_STATES:
            raise
    for n in range(2, MAX_RERUNS + 2):
        suffix = f"-{n}"
        name = first[: MAX_NAME_LENGTH - len(suffix)].rstrip("-") + suffix
        try:
            job = client.submit_job(spec.model_copy(update={"name": name}))
        except Conflict:
            continue
        why = f"job '{first}' has already run ({taken.state}); this run is '{name}'"
        return job, why
    raise Conflict(409, "conflict", f"job '{first}' and {MAX_RERUNS} reruns of it exist")
