"""`corral whoami`: which server, which token, which workspace this CLI uses."""

from __future__ import annotations

import typer

from corral.cli.config import state
from corral.cli.options import JsonOpt
from corral.cli.output import esc, out, print_json


def whoami(
    ctx: typer.Context,
    json_: JsonOpt = False,
) -> None:
    """Show the server this CLI talks to and the role and workspace of its token."""
    st = state(ctx)
    with st.client() as client:
        me = client.whoami()
        server, workspace = client.server, client.workspace
    if json_:
        print_json(me.model_dump(mode="json"))
        return
    scope = f"workspace {esc(me.workspace)}" if me.workspace else "the whole cluster"
    out().print(f"server     {esc(server)}")
    out().print(f"token      {esc(me.token)}: {esc(me.role)} of {scope}")
    out().print(f"workspace  {esc(workspace)} (where job commands act)")
