"""Following a job from the CLI: why it waits, every replica's log, how it ended."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from corral.cli.output import CliError, note

if TYPE_CHECKING:
    from corral.client import Client
    from corral.wire.api import JobView


def follow_job(client: Client, name: str, replicas: int | None = None) -> int:
    """Say why the job waits while it waits, stream every replica's log once it runs, until
    it ends; report how it ended; its exit code."""
    from corral.wire.api import TERMINAL_JOB_STATES

    if replicas is None:
        replicas = client.get_job(name).spec.replicas
    which = "every replica" if replicas > 1 else "its log"
    note(f"[dim]following {which}; Ctrl-C stops following[/]")
    last: list[str] = ["pending"]
    try:
        follow_all(client, name, replicas > 1, last)
        job = client.get_job(name)
        if job.state not in TERMINAL_JOB_STATES:
            job = client.wait_job(name, poll_s=0.5)
    except KeyboardInterrupt:
        note("\n" + stopped_text(name, last[0]))
        return 130
    return report_outcome(job)


def stopped_text(name: str, state: str) -> str:
    """What Ctrl-C leaves behind, said for the state the job was last seen in."""
    from corral.cli.output import esc

    n = esc(name)
    if state == "pending":
        return (
            f"stopped following; job {n} is still pending: it will run when placed. "
            f"Drop it: corral job cancel {n} · follow again: corral job logs -f {n} --replica all"
        )
    if state in ("succeeded", "failed", "cancelled"):
        return f"stopped following; job {n} has ended ({state}): corral job get {n}"
    return (
        f"stopped following; job {n} keeps running. Follow again: corral job logs -f {n} "
        f"--replica all · stop it: corral job cancel {n}"
    )


def follow_all(client: Client, name: str, prefixed: bool, last: list[str]) -> None:
    """Print follow.follow_job's events; `last[0]` keeps the state last seen (for Ctrl-C)."""
    from corral.cli.logprint import LogPrinter
    from corral.cli.output import esc
    from corral.client.follow import Ended, LogText, NewAttempt, Running, Waiting, follow_job

    printer = LogPrinter(prefixed)
    try:
        for event in follow_job(client, name):
            if isinstance(event, Waiting):
                last[0] = event.state
                why = f": {esc(event.reason)}" if event.reason else ""
                note(f"[yellow]{esc(event.state)}[/]{why}")
            elif isinstance(event, Running):
                last[0] = "running"
            elif isinstance(event, LogText):
                printer.write(event.rank, event.data)
            elif isinstance(event, NewAttempt):
                printer.close()
                note(f"[dim]── attempt {event.attempt} of job {esc(name)} ──[/]")
            elif isinstance(event, Ended):
                last[0] = event.state
    finally:
        printer.close()


def report_outcome(job: JobView) -> int:
    from corral.cli.output import duration, esc

    ran = ""
    if job.started_at is not None and job.finished_at is not None:
        ran = f" in {duration(job.finished_at - job.started_at)}"
    tries = f" after {job.attempt} attempts" if job.attempt > 1 else ""
    if job.state == "succeeded":
        note(f"job [bold]{esc(job.name)}[/] [green]succeeded[/]{ran}{tries}")
        return 0
    if job.state == "cancelled":
        note(f"job [bold]{esc(job.name)}[/] was [dim]cancelled[/]")
        return 1
    why = f"exit code {job.exit_code}" if job.exit_code is not None else "no exit code"
    if job.reason:
        why += f" — {esc(job.reason)}"
    note(f"job [bold]{esc(job.name)}[/] [red]failed[/]{ran}{tries}: {why}")
    note(f"[dim]details: corral job get {esc(job.name)}[/]")
    code = job.exit_code
    return code if code is not None and 0 < code < 256 else 1


def stream(client: Client, name: str, replica: int, follow: bool) -> None:
    from corral.cli.output import esc

    at_line_start = True

    def write(data: str) -> None:
        nonlocal at_line_start
        sys.stdout.write(data)
        sys.stdout.flush()
        at_line_start = data.endswith("\n")

    if follow:
        attempt: int | None = None
        for page in client.follow_log_pages(name, replica):
            if attempt is not None and page.attempt != attempt:
                if not at_line_start:
                    write("\n")
                note(f"[dim]── attempt {page.attempt} of job {esc(name)} ──[/]")
            attempt = page.attempt
            write(page.data)
    else:
        offset = 0
        while True:
            page = client.job_logs(name, replica, offset)
            if page.data:
                write(page.data)
            if page.complete or not page.data or page.next_offset <= offset:
                break
            offset = page.next_offset
    if not at_line_start:
        write("\n")


def replica_arg(value: str) -> int | None:
    """--replica: a rank (0, 1, ...) or `all` (None)."""
    if value.strip().lower() == "all":
        return None
    try:
        rank = int(value)
    except ValueError:
        rank = -1
    if rank < 0:
        raise CliError(f"--replica: expected a rank (0, 1, ...) or all, got {value!r}", code=2)
    return rank


def print_all(client: Client, name: str) -> None:
    """Every replica's log as it is now (no following), prefixed when there are several."""
    from corral.cli.logprint import LogPrinter

    answer = client.all_logs(name)
    printer = LogPrinter(answer.replicas > 1)
    offsets = [p.next_offset for p in answer.pages]
    try:
        while True:
            for page in answer.pages:
                printer.write(page.replica, page.data)
            if not any(p.data for p in answer.pages):
                break
            answer = client.all_logs(name, offsets, answer.attempt)
            offsets = [p.next_offset for p in answer.pages]
    finally:
        printer.close()
