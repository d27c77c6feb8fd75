"""Help screens that read well: nothing after a flag (typer 0.2x prints `<bool>`, as if
`--json` wanted a value) and an option's value named after the option (`--name NAME`,
`--env ENV`) instead of a Python type (`<str>`, `<list[str]>`). Choices and numbers keep
their type: it says something the name does not.
"""

from __future__ import annotations

from typing import Any

_BY_NAME = ("<str>", "<list[str]>")


def quiet_types() -> None:
    """Install once, before any help is printed."""
    from typer import core

    if getattr(core.TyperOption, "_corral_quiet", False):
        return
    option_type = core.TyperOption.display_type_rich
    argument_type = core.TyperArgument.display_type_rich

    def option(self: Any, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        value: str | None = option_type(self, ctx)
        return str(self.name).upper() if value in _BY_NAME and self.name else value

    def argument(self: Any, ctx: Any) -> str | None:
        value: str | None = argument_type(self, ctx)
        # The argument's name (FILE.yaml) is already in the first column.
        return None if value in _BY_NAME else value

    core.TyperOption.display_type_rich = option  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = argument  # type: ignore[method-assign]
    core.TyperOption._corral_quiet = True  # type: ignore[attr-defined]
