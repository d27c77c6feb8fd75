"""The shared pagination helper: cursors round-trip, bad ones name the field, pages cover
a list exactly once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.server.errors import Invalid
from corral.server.services.pages import (
    PageRequest,
    decode_cursor,
    encode_cursor,
    list_page,
)


def key_text(max_size: int) -> st.SearchStrategy[str]:
    """Text a database can store as a key: anything but NUL (PostgreSQL refuses it; a
    cursor holding one is refused with a 422)."""
    chars = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
    return st.text(chars, max_size=max_size)


@given(st.floats(allow_nan=False, allow_infinity=False), key_text(max_size=40))
def test_a_cursor_round_trips_its_key(at: float, ident: str) -> None:
    assert decode_cursor(encode_cursor((at, ident)), (float, str)) == (at, ident)


@pytest.mark.parametrize(
    ("cursor", "types"),
    [
        ("", (float, str)),
        ("%%%", (float, str)),
        ("bm90IGpzb24", (float, str)),  # base64 of "not json"
        (encode_cursor(("a",)), (float, str)),  # too short
        (encode_cursor((1.0, 2)), (float, str)),  # a number where a name goes
        (encode_cursor((True, "x")), (float, str)),  # a bool is no time
        (encode_cursor((1, "t")), (str, str)),  # another list's key
    ],
)
def test_a_cursor_that_is_not_this_lists_is_refused_naming_it(
    cursor: str, types: tuple[type, ...]
) -> None:
    with pytest.raises(Invalid) as caught:
        decode_cursor(cursor, types)
    assert [f["path"] for f in caught.value.fields] == ["cursor"]


@given(st.lists(key_text(max_size=5), unique=True, max_size=30), st.integers(1, 7))
def test_pages_cover_a_list_once_in_order(items: list[str], limit: int) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(len(items) + 2):
        page = list_page(items, lambda i: (i,), (str,), PageRequest(limit, cursor))
        assert len(page.items) <= limit
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(items)
