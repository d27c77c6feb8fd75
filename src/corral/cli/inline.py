"""Commands that take a workload's own command line after `--` (`job run`, `endpoint deploy`)."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

_INLINE_ARGV = "corral.inline_argv"


class InlineCommand(TyperCommand):
    """Keeps everything after `--` for the workload, so that `-- python train.py --lr 3` is
    its argv and not corral's flags."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[_INLINE_ARGV] = args[cut + 1 :]
            args = args[:cut]
        else:
            ctx.meta[_INLINE_ARGV] = None
        result: list[str] = super().parse_args(ctx, args)
        return result


def inline_argv(ctx: Any) -> list[str] | None:
    """The argv after `--`, or None when there was no `--`."""
    argv: list[str] | None = ctx.meta.get(_INLINE_ARGV)
    return argv
