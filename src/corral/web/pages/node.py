"""The node page (stub: being built)."""

from __future__ import annotations

from fastapi import APIRouter

from corral.web.session import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)
