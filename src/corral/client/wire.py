"""Response bodies into views, with an error a person can act on when they do not fit."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from corral.client.errors import ProtocolError
from corral.spec.limits import STORED

V = TypeVar("V", bound=BaseModel)


def parse_view(kind: type[V], data: Any) -> V:
    try:
        # What the server sends back was bounded when submitted: not checked again here.
        return kind.model_validate(data, context=STORED)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProtocolError(
            f"the server sent a {kind.__name__} this client does not understand "
            f"({where}: {first['msg']}); are the client and server versions the same?"
        ) from None
