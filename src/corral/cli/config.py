"""What a command needs from outside itself, resolved from flags, environment and config.json.

`CliDeps` is the seam for tests: `build_app(CliDeps(client_factory=...))` makes every command
talk to, say, an `httpx.MockTransport`, with no global state to patch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from corral.client import Client, Settings


def _default_client(settings: Settings) -> Client:
    from corral.client import Client

    return Client(settings.server, settings.token, settings.workspace, origin=settings.origin)


@dataclass(frozen=True)
class CliDeps:
    """The CLI's ways out: how to make a client, where home is, how to start children."""

    client_factory: Callable[[Settings], Client] = _default_client
    # None: $CORRAL_HOME, else ~/.corral, read when a command runs.
    home: Path | None = None
    # argv that runs this CLI; `corral up` appends `server ...` / `agent ...` to it.
    self_argv: Sequence[str] = field(
        default_factory=lambda: (sys.executable, "-m", "corral.cli.main")
    )


@dataclass(frozen=True)
class CliState:
    """The global options of one invocation, handed to every subcommand through ctx.obj."""

    deps: CliDeps
    server: str | None = None
    workspace: str | None = None

    def home(self) -> Path:
        if self.deps.home is not None:
            return self.deps.home
        from corral.client.config import corral_home

        return corral_home(os.environ)

    def settings(self, workspace: str | None = None) -> Settings:
        from corral.client.config import resolve_settings

        return resolve_settings(
            self.home(), server=self.server, workspace=workspace or self.workspace
        )

    def client(self, workspace: str | None = None) -> Client:
        return self.deps.client_factory(self.settings(workspace))


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if isinstance(obj, CliState):
        return obj
    # A subcommand app run on its own (not through build_app) still works with the defaults.
    return CliState(CliDeps())
