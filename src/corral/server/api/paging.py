"""`?limit=&cursor=` on every list route, read the same way (services/pages.py pages)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from corral.server.services.pages import DEFAULT_LIMIT, MAX_LIMIT, PageRequest


def page_request(
    limit: int = Query(
        DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"items per page, 1..{MAX_LIMIT}"
    ),
    cursor: str | None = Query(
        None, max_length=512, description="the next_cursor of the previous page"
    ),
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor or None)


Paging = Annotated[PageRequest, Depends(page_request)]
