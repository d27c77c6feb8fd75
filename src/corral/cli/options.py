"""Options every noun shares, declared once: --workspace, --json, the resources of a replica,
--env; and `takes_flags`, which declares a dataclass of spec-shaping flags as a command's
options and hands the command one value of it.

Only typer and the standard library here: importing this module is part of every `--help`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

WorkspaceOpt = Annotated[
    str | None,
    typer.Option(
        "--workspace", "-w", help="Workspace (default: the configured one).", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON document.")]

GpusOpt = Annotated[
    str | None, typer.Option(help="Per replica: H100:8, 8 or H100.", show_default=False)
]
CpusOpt = Annotated[float | None, typer.Option(help="CPUs per replica.", show_default=False)]
MemoryOpt = Annotated[
    str | None, typer.Option(help="Memory per replica: 16Gi, 512Mi.", show_default=False)
]
EnvOpt = Annotated[
    list[str],
    typer.Option("--env", "-e", help="K=V, or K to pass this shell's value.", show_default=False),
]

F = TypeVar("F", bound=Callable[..., Any])


def takes_flags(flags_type: type[Any]) -> Callable[[F], F]:
    """Declare each field of the dataclass `flags_type` as an option of the command, where
    the command has its `flags` parameter, and call the command with `flags=flags_type(...)`.

    The fields carry their typer declarations (`gpus: GpusOpt = None`), so `deploy` and
    `update` (and the nouns to come) declare a flag once. A list field (default_factory)
    takes None from typer when the flag is not given: the dataclass's default stands then.
    """
    hints = typing.get_type_hints(flags_type, include_extras=True)
    fields = dataclasses.fields(flags_type)

    def decorate(command: F) -> F:
        signature = inspect.signature(command)
        flag_params = [
            inspect.Parameter(
                f.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=None if f.default is dataclasses.MISSING else f.default,
                annotation=hints[f.name],
            )
            for f in fields
        ]
        # typer reads the annotations of the signature: resolved ones, not strings.
        resolved = typing.get_type_hints(command, include_extras=True)
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name == "flags":
                params.extend(flag_params)
            else:
                params.append(param.replace(annotation=resolved.get(param.name, param.annotation)))

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {f.name: kwargs.pop(f.name) for f in fields}
            flags = flags_type(**{k: v for k, v in given.items() if v is not None})
            return command(*args, flags=flags, **kwargs)

        annotations = {k: v for k, v in resolved.items() if k != "flags"}
        wrapper.__annotations__ = {**annotations, **{f.name: hints[f.name] for f in fields}}
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return typing.cast("F", wrapper)

    return decorate
