"""`corral job ls`: one page (or all of them), a footer when more exist, and --watch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.cli.output import esc, note, out, print_json

if TYPE_CHECKING:
    from rich.console import RenderableType

    from corral.client import Client
    from corral.wire.api import JobKind, JobView

WATCH_POLL_S = 2.0


@dataclass(frozen=True)
class JobQuery:
    states: tuple[str, ...] = ()
    kind: JobKind = "all"
    limit: int | None = 50  # None: every page
    all_workspaces: bool = False


@dataclass(frozen=True)
class Listed:
    jobs: list[JobView]
    next_cursor: str | None  # where the jobs beyond `limit` start; None: there are none
    workspace: str

    @property
    def more(self) -> bool:
        return self.next_cursor is not None


def check_states(given: list[str]) -> tuple[str, ...]:
    """--state values, each one a job state (one `error:` line naming the option if not)."""
    from corral.cli.output import CliError
    from corral.core.states import JobState

    known = [state.value for state in JobState]
    for value in given:
        if value not in known:
            raise CliError(f"--state: expected one of {', '.join(known)}; got {value!r}", code=2)
    return tuple(given)


def fetch(client: Client, query: JobQuery) -> Listed:
    jobs: list[JobView] = []
    cursor: str | None = None
    while True:
        size = 1000 if query.limit is None else query.limit - len(jobs)
        page = client.jobs_page(
            query.states, query.kind, size, cursor, all_workspaces=query.all_workspaces
        )
        jobs.extend(page.jobs)
        cursor = page.next_cursor
        if cursor is None or (query.limit is not None and len(jobs) >= query.limit):
            break
    where = "*" if query.all_workspaces else client.workspace
    return Listed(jobs, cursor, where)


def render(listed: Listed, query: JobQuery, now: float | None = None) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    from corral.cli.jobview import jobs_table

    if not listed.jobs:
        return Text(empty_text(listed, query))
    parts: list[RenderableType] = [
        jobs_table(listed.jobs, now, with_workspace=query.all_workspaces)
    ]
    if listed.more:
        parts.append(Text.from_markup(f"[dim]{footer(listed)}[/]"))
    return Group(*parts)


def footer(listed: Listed) -> str:
    return f"showing the {len(listed.jobs)} newest; more exist: --limit N (up to 1000) or --all"


def empty_text(listed: Listed, query: JobQuery) -> str:
    where = "any workspace" if query.all_workspaces else f"workspace {listed.workspace}"
    if query.states or query.kind != "all":
        return f"no jobs in {where} match these filters"
    return f"no jobs in {where}; submit one: corral job run -- echo hello"


def list_once(client: Client, query: JobQuery, json_: bool) -> None:
    from corral.wire.api import JobList

    listed = fetch(client, query)
    if json_:
        print_json(
            JobList(jobs=listed.jobs, next_cursor=listed.next_cursor).model_dump(mode="json")
        )
    elif not listed.jobs:
        note(esc(empty_text(listed, query)))
    else:
        out().print(render(listed, query))


def watch_jobs(
    client: Client,
    query: JobQuery,
    poll_s: float = WATCH_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Redraw when the list changes, until Ctrl-C: in place on a terminal (rich Live), as
    a fresh copy of the table otherwise (a pipe, a log file)."""
    console = out()
    previous: list[tuple[str, str, str, str | None, int]] | None = None
    try:
        if console.is_terminal:
            from rich.live import Live

            listed = fetch(client, query)
            with Live(render(listed, query), console=console, auto_refresh=False) as live:
                while True:
                    sleep(poll_s)
                    listed = fetch(client, query)
                    # Ages change each time: redrawn every poll.
                    live.update(render(listed, query), refresh=True)
        while True:
            listed = fetch(client, query)
            seen = [(j.workspace, j.name, str(j.state), j.reason, j.attempt) for j in listed.jobs]
            if seen != previous:
                if previous is not None:
                    console.print()
                console.print(render(listed, query))
                previous = seen
            sleep(poll_s)
    except KeyboardInterrupt:
        return
