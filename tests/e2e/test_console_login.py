"""Logging in to the console in a real browser."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from support.cluster import Cluster
from support.console import LogIn


def test_log_in_with_a_token_and_out_again(cluster: Cluster, log_in: LogIn) -> None:
    page = log_in()
    expect(page).to_have_url(f"{cluster.url}/ui/fleet")
    expect(page.get_by_test_id("who")).to_contain_text("admin")
    cookies = page.context.cookies()
    (session,) = [c for c in cookies if c["name"] == "corral_console"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    # The cookie is out of reach of the page's scripts.
    assert page.evaluate("document.cookie") == ""
    page.get_by_role("button", name="log out").click()
    expect(page.get_by_test_id("token")).to_be_visible()
    page.goto("/ui/fleet")
    expect(page.get_by_test_id("token")).to_be_visible()


def test_a_wrong_token_is_refused_on_the_page(cluster: Cluster, browser: Browser) -> None:
    context = browser.new_context(base_url=cluster.url)
    page = context.new_page()
    page.goto("/ui/")
    page.get_by_test_id("token").fill("crl_wrong")
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("login-error")).to_have_text(
        "that token is not valid on this server"
    )
    context.close()
