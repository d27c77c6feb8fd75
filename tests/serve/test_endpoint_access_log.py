"""A corral.serve replica's access log: the real client from a trusted gateway, and the
readiness probe only when its answer changes (not a line a second)."""

from __future__ import annotations

import logging
import threading

import pytest
from fastapi.testclient import TestClient

from corral import serve
from corral.serve.access import client_of, trusted_networks


class Svc:
    def __init__(self) -> None:
        self.release = threading.Event()

    @serve.setup
    def load(self) -> None:
        self.release.wait(10)

    @serve.handler("/embed", method="POST")
    def embed(self) -> dict[str, int]:
        return {"ok": 1}


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "corral.serve.access"]


def test_readiness_is_logged_when_it_changes_and_requests_name_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="corral.serve.access")
    service = Svc()
    app = serve.build_app(service)
    with TestClient(app, client=("127.0.0.1", 40123)) as gateway:
        for _ in range(5):
            assert gateway.get("/health").status_code == 503
        service.release.set()
        for _ in range(500):
            if gateway.get("/health").status_code == 200:
                break
            threading.Event().wait(0.01)
        for _ in range(5):
            gateway.get("/health")
        r = gateway.post(
            "/embed", headers={"x-forwarded-for": "203.0.113.7", "x-real-ip": "203.0.113.7"}
        )
        assert r.status_code == 200
    logged = lines(caplog)
    health = [line for line in logged if "/health" in line]
    assert [line.split('" ')[1].split()[0] for line in health] == ["503", "200"]
    (embed,) = [line for line in logged if "/embed" in line]
    assert embed.startswith('203.0.113.7 - "POST /embed HTTP/1.1" 200 ')
    assert "127.0.0.1:0" not in "\n".join(logged)


def test_forwarded_headers_are_believed_only_from_a_trusted_peer() -> None:
    trusted = trusted_networks({"FORWARDED_ALLOW_IPS": "10.1.0.0/16, nonsense"})
    said = {"x-forwarded-for": "6.6.6.6, 198.51.100.9"}
    assert client_of(("127.0.0.1", 5), said, trusted) == "198.51.100.9"
    assert client_of(("10.1.2.3", 5), said, trusted) == "198.51.100.9"
    assert client_of(("10.2.0.1", 7), said, trusted) == "10.2.0.1:7"  # a stranger's claim
    assert client_of(("::ffff:10.1.0.9", 8), {"x-real-ip": "192.0.2.1"}, trusted) == "192.0.2.1"
    assert client_of(("127.0.0.1", 9), {}, trusted) == "127.0.0.1:9"
    assert client_of(None, said, trusted) == "-"
