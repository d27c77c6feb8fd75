"""`corral sim`: replay a GPU cluster trace (or a synthetic load) through the real scheduler."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.cli.output import CliError, err, out

FORMATS = ("synthetic", "openb", "philly-csv")
POLICIES = ("corral", "fifo", "fifo-backfill")


def sim(
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace",
            help="Trace file (OpenB: the pod list or its directory; Philly: the CSV).",
            show_default=False,
        ),
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", "-f", help="synthetic, openb or philly-csv.")
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
) -> None:
    """Simulate a fleet: the real scheduler on a virtual clock, over a trace or synthetic load.

    Example: corral sim --trace ../shared/traces/openb --format openb --policy corral --policy fifo
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
    if plot is not None and len(policies) > 1:
        raise CliError("--plot draws one run: give a single --policy with it", code=2)
    reports = []
    for name in policies:
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
        )
        options.check()
        with err().status(f"simulating with policy {name} …"):
            try:
                reports.append(run(options))
            except OSError as exc:
                raise CliError(f"cannot read the input: {exc}") from None
    if json_:
        for report in reports:
            print(report.to_json())
        return
    out().print(format_table(reports), highlight=False, markup=False)
    if plot is not None:
        out().print(f"plot written to {plot}", highlight=False, markup=False)
