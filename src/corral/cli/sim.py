"""`corral sim`: replay a GPU cluster trace (or a synthetic load) through the real scheduler."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.config import state
from corral.cli.output import CliError, err, out

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as Bar
    from rich.progress import TaskID

    from corral.sim import SimOptions, SimReport
    from corral.sim.engine import Progress

FORMATS = ("synthetic", "openb", "philly-csv", "bursty")
POLICIES = ("corral", "fifo", "fifo-backfill")


def sim(
    ctx: typer.Context,
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace",
            help="Trace file (OpenB: the pod list or its directory; Philly: the CSV).",
            show_default=False,
        ),
    ] = None,
    format_: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="synthetic, openb, philly-csv or bursty (a generated day)."
        ),
    ] = "synthetic",
    gpus: Annotated[
        int | None,
        typer.Option("--gpus", help="Simulate N GPUs as N/8 nodes of 8 H100.", show_default=False),
    ] = None,
    cluster: Annotated[
        Path | None,
        typer.Option(
            "--cluster",
            help="Cluster description (YAML): providers, racks, nodes, prices.",
            show_default=False,
        ),
    ] = None,
    pools: Annotated[
        Path | None,
        typer.Option(
            "--pools",
            help="Node pools (YAML) the fleet autoscaler grows and shrinks, instead of a cluster.",
            show_default=False,
        ),
    ] = None,
    fixed_pools: Annotated[
        bool,
        typer.Option(
            "--fixed-pools",
            help="With --pools, also run the pools held at their max (the baseline).",
        ),
    ] = False,
    bill_until: Annotated[
        float | None,
        typer.Option(
            "--bill-until",
            help="With --pools: bill nodes until at least this many hours (a day: 24).",
            show_default=False,
        ),
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="corral, fifo or fifo-backfill; repeat to compare side by side (default: corral).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same report.")] = 0,
    failures: Annotated[
        str | None,
        typer.Option(
            "--failures",
            help="Node failures by cause: llama3 (the Llama 3 405B mix).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write a PNG of utilization and queue over time.", show_default=False
        ),
    ] = None,
    max_jobs: Annotated[
        int | None,
        typer.Option("--max-jobs", help="Replay only the first N jobs.", show_default=False),
    ] = None,
    fill: Annotated[
        float | None,
        typer.Option(
            "--fill",
            help="FGD-style fill: jobs arrive and stay until demand reaches this × capacity.",
            show_default=False,
        ),
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="One JSON line per policy (avg_jct_s, utilization …).")
    ] = False,
    no_save: Annotated[
        bool,
        typer.Option(
            "--no-save",
            help="Do not keep this run for the console's Simulation page ($CORRAL_HOME/sim-runs).",
        ),
    ] = False,
) -> None:
    """Simulate a fleet: the real scheduler on a virtual clock, over a trace or synthetic load.

    Example: corral sim --trace ../shared/traces/openb --format openb --fill 1.0 -p corral -p fifo

    Pools: corral sim --format bursty --pools pools.yaml --fixed-pools --bill-until 24
    """
    from corral.sim import SimOptions, format_table, run

    if format_ not in FORMATS:
        raise CliError(f"--format {format_!r}: expected one of {', '.join(FORMATS)}", code=2)
    policies = policy or ["corral"]
    for name in policies:
        if name not in POLICIES:
            raise CliError(f"--policy {name!r}: expected one of {', '.join(POLICIES)}", code=2)
    if trace is not None and not trace.exists():
        raise CliError(f"--trace {trace}: no such file or directory", code=2)
    if cluster is not None and not cluster.is_file():
        raise CliError(f"--cluster {cluster}: no such file", code=2)
    if pools is not None and not pools.is_file():
        raise CliError(f"--pools {pools}: no such file", code=2)
    if (fixed_pools or bill_until is not None) and pools is None:
        flag = "--fixed-pools" if fixed_pools else "--bill-until"
        raise CliError(f"{flag} needs --pools FILE", code=2)
    if plot is not None and len(policies) > 1:
        raise CliError("--plot draws one run: give a single --policy with it", code=2)
    runs = [(name, False) for name in policies]
    if fixed_pools:
        runs.append((policies[0], True))
    if plot is not None and len(runs) > 1:
        raise CliError("--plot draws one run: leave out --fixed-pools", code=2)
    reports = []
    first: SimOptions | None = None
    for name, fixed in runs:
        options = SimOptions(
            trace=trace,
            format=format_,  # type: ignore[arg-type]  # checked against FORMATS above
            gpus=gpus,
            cluster=cluster,
            policy=name,  # type: ignore[arg-type]  # checked against POLICIES above
            seed=seed,
            failures=failures,  # type: ignore[arg-type]  # SimOptions.check names it
            plot=plot,
            max_jobs=max_jobs,
            fill=fill,
            pools=pools,
            fixed_pools=fixed,
            bill_until_s=None if bill_until is None else bill_until * 3600,
        )
        options.check()
        first = first or options
        with ProgressView("fixed pools" if fixed else name) as view:
            try:
                reports.append(run(options, view.update))
            except OSError as exc:
                raise CliError(f"cannot read the input: {exc}") from None
    if json_:
        for report in reports:
            print(report.to_json())
    else:
        # soft_wrap: long notes stay one line each, as a script or a wide terminal reads them.
        out().print(format_table(reports), highlight=False, markup=False, soft_wrap=True)
        if plot is not None:
            out().print(f"plot written to {plot}", highlight=False, markup=False)
    if not no_save and first is not None:
        _save(state(ctx).home(), first, reports)


def _save(home: Path, options: SimOptions, reports: list[SimReport]) -> None:
    """Keep the run for the console (sim/saved.py); a run that cannot be saved still
    printed its report, so this only warns."""
    from corral.sim.saved import RunInputs, save_run

    try:
        path = save_run(home, RunInputs.of(options), reports, time.time())
    except OSError as exc:
        err().print(f"note: run not saved ({exc})", highlight=False, markup=False)
        return
    err().print(f"run saved: {path} (console: /ui/sim/{path.stem})", highlight=False, markup=False)


PLAIN_EVERY_S = 10.0  # without a terminal: one line this often, none for a quick run


def sim_time(seconds: float) -> str:
    """Simulated time, in hours, with days beside it once it is long."""
    hours = seconds / 3600
    return f"{hours:,.1f} h" if hours < 48 else f"{hours:,.0f} h ({hours / 24:,.1f} d)"


class ProgressView:
    """Draws the engine's progress on stderr: a bar on a terminal, else a plain line now
    and then (logs, CI). The engine only reports; the clock is read here."""

    def __init__(self, policy: str, console: Console | None = None) -> None:
        self.policy = policy
        self.console = console or err()
        self.started = time.monotonic()
        self.last_line = self.started
        self.bar: Bar | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> ProgressView:
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("simulating {task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.task = self.bar.add_task(self.policy, total=1.0, detail="loading …")
            self.bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.bar is not None:
            self.bar.stop()

    def detail(self, p: Progress) -> str:
        elapsed = time.monotonic() - self.started
        rate = p.events / elapsed if elapsed > 0 else 0.0
        return f"{p.events:,} events · {rate:,.0f} events/s · sim time {sim_time(p.now_s)}"

    def update(self, p: Progress) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=p.fraction, detail=self.detail(p))
            return
        now = time.monotonic()
        if p.finished and self.last_line == self.started:
            return  # quick enough that no line was written: none at the end either
        if p.finished or now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            done = "done" if p.finished else f"{p.fraction:.0%}"
            self.console.print(
                f"sim {self.policy}: {done} · {self.detail(p)}", highlight=False, markup=False
            )
