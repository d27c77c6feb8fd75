"""Logging in: the token becomes an HttpOnly cookie; pages need it; actions need CSRF."""

from __future__ import annotations

import gzip

from fastapi.testclient import TestClient

from corral.server.auth import AuthFailures
from corral.web.session import COOKIE, csrf_for, safe_next
from support.app import ADMIN_TOKEN
from support.console import log_in


def test_pages_redirect_to_login_without_a_session(server: TestClient) -> None:
    answer = server.get("/ui/fleet?x=1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=/ui/fleet%3Fx%3D1"


def test_a_fragment_without_a_session_answers_401_with_the_login_page(server: TestClient) -> None:
    answer = server.get("/ui/fleet", headers={"HX-Request": "true"}, follow_redirects=False)
    assert answer.status_code == 401
    assert answer.headers["hx-redirect"].startswith("/ui/login?next=")


def test_login_sets_an_httponly_strict_cookie_and_lands_on_next(server: TestClient) -> None:
    answer = server.post(
        "/ui/login", data={"token": ADMIN_TOKEN, "next": "/ui/fleet"}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/fleet"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
    page = server.get("/ui/fleet")
    assert page.status_code == 200
    assert "admin" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_a_bad_token_is_refused_in_words_and_sets_no_cookie(server: TestClient) -> None:
    answer = server.post("/ui/login", data={"token": "crl_nope"}, follow_redirects=False)
    assert answer.status_code == 401
    assert "that token is not valid on this server" in answer.text
    assert "set-cookie" not in answer.headers
    empty = server.post("/ui/login", data={"token": ""}, follow_redirects=False)
    assert empty.status_code == 400 and "give an API token" in empty.text


def test_next_never_leaves_the_console() -> None:
    for bad in ("https://evil.example/", "//evil.example/ui/", "/v1/jobs", "/ui\\@evil", None):
        assert safe_next(bad) == "/ui/"
    assert safe_next("/ui/jobs/default/x") == "/ui/jobs/default/x"


def test_logout_needs_the_csrf_token_and_clears_the_cookie(server: TestClient) -> None:
    csrf = log_in(server)
    refused = server.post("/ui/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert "CSRF" in refused.text
    assert server.get("/ui/fleet", follow_redirects=False).status_code == 200
    done = server.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303
    assert server.get("/ui/fleet", follow_redirects=False).status_code == 303


def test_csrf_token_is_bound_to_the_session_token() -> None:
    assert csrf_for("crl_a") != csrf_for("crl_b")
    assert csrf_for("crl_a") == csrf_for("crl_a")


def test_a_request_from_another_origin_is_refused(server: TestClient) -> None:
    csrf = log_in(server)
    answer = server.post(
        "/ui/logout",
        headers={"x-csrf-token": csrf, "origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 403


def test_unknown_console_path_reads_as_a_page(server: TestClient) -> None:
    log_in(server)
    answer = server.get("/ui/nothing-here")
    assert answer.status_code == 404
    assert "text/html" in answer.headers["content-type"]
    api = server.get("/v1/nothing-here")
    assert api.headers["content-type"].startswith("application/json")


def test_static_files_are_served_from_the_package(server: TestClient) -> None:
    for path in ("console.css", "console.js", "vendor/htmx.min.js", "vendor/uPlot.iife.min.js"):
        answer = server.get(f"/ui/static/{path}")
        assert answer.status_code == 200, path


def test_a_bad_query_value_reads_as_a_page_naming_the_field(server: TestClient) -> None:
    log_in(server)
    answer = server.get("/ui/jobs/default/nothing/logs/stream?replica=-1")
    assert answer.status_code == 422
    assert "text/html" in answer.headers["content-type"]
    assert "replica" in answer.text
    api = server.get("/v1/nodes?limit=0", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert api.status_code == 422 and api.headers["content-type"].startswith("application/json")


def test_a_big_page_goes_gzipped_to_a_browser_that_takes_it(server: TestClient) -> None:
    from starlette.requests import Request

    from corral.web.render import GZIP_OVER, html

    def request(encoding: str) -> Request:
        headers = [(b"accept-encoding", encoding.encode())] if encoding else []
        return Request({"type": "http", "path": "/ui/x", "headers": headers, "query_string": b""})

    big = {"title": "x" * (GZIP_OVER + 1), "message": "m"}
    zipped = html(request("gzip, br"), "error.html", big)
    assert zipped.headers["content-encoding"] == "gzip"
    plain = html(request(""), "error.html", big)
    assert "content-encoding" not in plain.headers
    assert gzip.decompress(zipped.body) == plain.body
    small = html(request("gzip"), "error.html", {"title": "t", "message": "m"})
    assert "content-encoding" not in small.headers


def test_a_refused_session_cookie_counts_as_a_failed_authentication(server: TestClient) -> None:
    limit = AuthFailures().limit
    server.cookies.set(COOKIE, "crl_guess", path="/ui")
    for _ in range(limit):
        answer = server.get("/ui/fleet", follow_redirects=False)
        assert answer.status_code == 401
        assert "your session has ended" in answer.text
        assert f'{COOKIE}=""' in answer.headers["set-cookie"]  # deleted
        server.cookies.set(COOKIE, "crl_guess", path="/ui")
    blocked = server.get("/ui/fleet", follow_redirects=False)
    assert blocked.status_code == 429
    assert blocked.headers["content-type"].startswith("text/html")
    api = server.get("/v1/whoami", headers={"Authorization": "Bearer crl_guess2"})
    assert api.status_code == 429 and api.json()["error"]["code"] == "too_many_requests"


def test_a_live_session_still_works_from_a_blocked_address(server: TestClient) -> None:
    log_in(server)
    for n in range(AuthFailures().limit):
        guess = {"Authorization": f"Bearer crl_guess{n}"}
        assert server.get("/v1/whoami", headers=guess).status_code == 401
    assert server.get("/v1/whoami", headers={"Authorization": "Bearer x"}).status_code == 429
    # The console's own cookie was accepted moments ago: its pages still answer.
    assert server.get("/ui/fleet", follow_redirects=False).status_code == 200


def test_another_site_cannot_log_this_browser_in(server: TestClient) -> None:
    answer = server.post(
        "/ui/login",
        data={"token": ADMIN_TOKEN},
        headers={"origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


def test_digits_that_are_not_ascii_are_bad_input_not_a_crash(server: TestClient) -> None:
    log_in(server)
    assert server.get("/ui/workloads?limit=%C2%B2").status_code == 422
    # A log stream resumed with such an event id starts over instead of failing.
    from corral.web.pages.job import _resume

    assert _resume("²:0") is None and _resume("3:¹") is None
    assert _resume("3:120") == (3, 120)
