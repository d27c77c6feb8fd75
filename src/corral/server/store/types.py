"""Column types of our own: a state column that stores the plain string and reads back the
core.states member, refusing a value that is no state at all on the way in."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import Dialect, String
from sqlalchemy.types import TypeDecorator

E = TypeVar("E", bound=StrEnum)


class State(TypeDecorator[E], Generic[E]):
    """VARCHAR(length) in the database (what the migrations made), a StrEnum in Python."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum
        self._members: dict[str, E] = {m.value: m for m in enum}

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        member = self._members.get(value)
        if member is None:  # a typo in a state would otherwise be stored and never match
            raise ValueError(f"{value!r} is not a {self.enum.__name__}")
        return member.value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self._members[value]
