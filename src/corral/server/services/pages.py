"""One way to page every list: `limit` and an opaque `cursor` in, `next_cursor` out.

A cursor is the sort key of the last item a page returned (keyset pagination), never an
offset: a page costs the same at item 50 and at item 100,000, and items inserted or deleted
meanwhile neither repeat nor vanish from the pages still to come.

    SQL:        keyset_page(session, query, [Job.submitted_at, Job.id], page, descending=True)
    in memory:  list_page(items, lambda t: (t.name,), (str,), page)

The cursor is base64url of the key as JSON; it is opaque to clients, and a cursor that does
not decode to a key of the expected shape is refused naming the `cursor` field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from corral.server.errors import Invalid

T = TypeVar("T")
Key = tuple[str | int | float, ...]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(key: Key) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, types: Sequence[type]) -> Key:
    """The key in `cursor`, each part of the type given; a 422 naming `cursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = None
    if not isinstance(parts, list) or len(parts) != len(types):
        raise bad_cursor()
    key: list[str | int | float] = []
    for part, kind in zip(parts, types, strict=True):
        if kind is float and isinstance(part, int) and not isinstance(part, bool):
            part = float(part)
        if not isinstance(part, kind) or isinstance(part, bool) or not _storable(part):
            raise bad_cursor()
        key.append(cast("str | int | float", part))
    return tuple(key)


def _storable(part: object) -> bool:
    """What a database can compare with: no lone surrogate or NUL in a string (a driver
    error, a 500), no infinity or NaN."""
    if isinstance(part, str):
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return "\x00" not in part
    if isinstance(part, float):
        return math.isfinite(part)
    return True


def bad_cursor() -> Invalid:
    message = "not a cursor this list gave out: pass the next_cursor of the previous page"
    return Invalid(f"cursor: {message}", [{"path": "cursor", "message": message}])


def keyset_page(
    session: Session,
    query: Select[Any],
    columns: Sequence[InstrumentedAttribute[Any]],
    page: PageRequest,
    *,
    descending: bool = False,
    key: Callable[[Any], Key] | None = None,
) -> Page[Any]:
    """One page of `query` (which selects one entity or row) in order of `columns`, which
    must be unique together (end them with the primary key). `key` reads a row's sort key
    back (default: the columns' attribute names on the row)."""
    names = [c.key for c in columns]
    read = key or (lambda row: tuple(getattr(row, n) for n in names))
    if page.cursor is not None:
        types = [c.type.python_type for c in columns]
        query = query.where(beyond(columns, decode_cursor(page.cursor, types), descending))
    order = [c.desc() if descending else c.asc() for c in columns]
    rows = list(session.scalars(query.order_by(*order).limit(page.limit + 1)))
    return _cut(rows, page.limit, read)


def list_page(
    items: Sequence[T], key: Callable[[T], Key], types: Sequence[type], page: PageRequest
) -> Page[T]:
    """One page of a list already in memory (a service that builds the whole list), in
    order of `key` (whose parts have `types`): the same cursors as keyset_page, for lists
    that stay small (nodes, tokens, secrets)."""
    ordered = sorted(items, key=key)
    if page.cursor is not None:
        after = decode_cursor(page.cursor, types)
        ordered = [i for i in ordered if key(i) > after]
    return _cut(ordered, page.limit, key)


def beyond(columns: Sequence[InstrumentedAttribute[Any]], cursor: Key, descending: bool) -> Any:
    """Rows after `cursor` in the order of `columns`."""
    # (a, b) > (x, y) spelled out: a > x OR (a = x AND b > y). Row values would do on both
    # databases, but this form lets either planner walk the (a, b) index from the cursor.
    clauses = []
    for i, column in enumerate(columns):
        equal = [columns[j] == cursor[j] for j in range(i)]
        past = column < cursor[i] if descending else column > cursor[i]
        clauses.append(and_(*equal, past))
    return or_(*clauses)


def _cut(rows: list[T], limit: int, key: Callable[[T], Key]) -> Page[T]:
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    return Page(rows, encode_cursor(key(rows[-1])))
