"""Keeping pydantic out of `--help`.

typer coerces every parameter's value through a pydantic TypeAdapter, and importing
pydantic costs ~80 ms. On the way to a subcommand's help, click processes the options of
every group above it (all unset) and their `--help` flags, so without this every help screen
paid for pydantic. Bool and text options need no coercion: their values already have the
right type, or are None.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup, TyperOption

_PLAIN: dict[Any, type] = {bool: bool, str: str, str | None: str}


class _PlainOption(TyperOption):
    def process_value(self, ctx: Any, value: Any) -> Any:
        descriptor = getattr(self, "type_descriptor", None)
        kind = _PLAIN.get(getattr(descriptor, "annotation", None))
        if kind is None or (value is not None and not isinstance(value, kind)):
            return super().process_value(ctx, value)
        return value if self.callback is None else self.callback(ctx, self, value)


class LightGroup(TyperGroup):
    """A typer group whose bool and text options skip pydantic coercion."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        for param in params:
            if type(param) is TyperOption:
                # Same object, a subclass that only overrides process_value.
                param.__class__ = _PlainOption
        return params
