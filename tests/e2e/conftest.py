"""The console end to end: a real control plane and agents as processes, driven through
Debian's headless Chromium with Playwright (scripts/test-deps.sh installs the browser)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from support.cluster import ADMIN_TOKEN, Cluster, report_cluster_logs
from support.console import LogIn

CHROMIUM = "/usr/bin/chromium"
# Polls and streams land within a few seconds; a CI machine under load gets room.
expect.set_options(timeout=20_000)


# Per module, not per session: Playwright's sync API keeps an event loop running on this
# thread while it is started, and every later test calling asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test-deps.sh (Debian's chromium)")
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_server()
    try:
        yield c
    finally:
        c.close()  # its agents' replicas and lifelines too


@pytest.fixture
def log_in(browser: Browser, cluster: Cluster) -> Iterator[LogIn]:
    """`log_in(token)`: a fresh browser context logged in through the login form."""
    contexts = []

    def open_as(token: str = ADMIN_TOKEN, start: str = "/ui/fleet") -> Page:
        context = browser.new_context(base_url=cluster.url, viewport={"width": 1400, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.goto(start)
        page.get_by_test_id("token").fill(token)
        page.get_by_test_id("login").click()
        expect(page.get_by_test_id("who")).to_be_visible()
        return page

    yield open_as
    for context in contexts:
        context.close()


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    report_cluster_logs(item, call)
