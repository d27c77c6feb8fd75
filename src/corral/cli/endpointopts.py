"""The options of `corral endpoint deploy` and `update` beyond the shared ones
(`options.py`); `EndpointFlags` declares them once for both.

Only typer here: importing this module is part of every `corral --help`.
"""

from __future__ import annotations

from typing import Annotated

import typer

MinOpt = Annotated[
    int | None,
    typer.Option(help="Fewest replicas (0 allows scaling to zero); default 1.", show_default=False),
]
MaxOpt = Annotated[
    int | None,
    typer.Option(
        help="Most replicas the autoscaler may run; default: --min-replicas.", show_default=False
    ),
]
TargetOpt = Annotated[
    float | None,
    typer.Option(
        help="Requests in flight per replica the autoscaler aims for; default 8.",
        show_default=False,
    ),
]
ToZeroOpt = Annotated[
    str | None,
    typer.Option(
        help="Remove the last replica after this long without a request: 5m, 1h "
        "(implies --min-replicas 0).",
        show_default=False,
    ),
]
ReadyPathOpt = Annotated[
    str | None,
    typer.Option(
        help="GET path that answers 2xx once the model is loaded; default /health.",
        show_default=False,
    ),
]
ReadyTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        help="How long a replica may take to become ready (model loading): 10m.",
        show_default=False,
    ),
]
AuthOpt = Annotated[
    str | None,
    typer.Option(
        help="public (anyone who reaches the gateway) or workspace (a token of the "
        "workspace; the default).",
        show_default=False,
    ),
]
AppOpt = Annotated[
    str | None,
    typer.Option(
        "--app",
        help="Serve a corral.serve class, FILE.py:Class, instead of a command. A relative "
        "path is made absolute here, and every node must see the file at that path (a shared "
        "filesystem); on the one machine of `corral up` it just works.",
        show_default=False,
    ),
]
WaitOpt = Annotated[
    bool, typer.Option("--wait", help="Wait until it serves; exit 1 with the reason if not.")
]
UpdateWaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait/--detach",
        help="Wait until the new revision serves, showing progress (the default); exit 1 with "
        "the reason if it does not within --timeout. --detach returns at once.",
    ),
]
TimeoutOpt = Annotated[
    str, typer.Option("--timeout", help="How long waiting waits: 90 (s), 10m, 1h.")
]
