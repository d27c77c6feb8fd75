"""corral.serve: a decorated class becomes an HTTP service, ready only after its setup."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from corral import serve
from corral.serve.run import TargetError, load_target


class Greeting(BaseModel):
    name: str
    times: int = 1


class Reply(BaseModel):
    text: str


class Greeter:
    readiness_path = "/ready"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.prefix = ""

    @serve.setup
    def load(self) -> None:
        self.release.wait(10)  # a model loading, until the test lets it finish
        self.prefix = "hello"

    @serve.handler("/greet")
    def greet(self, body: Greeting) -> Reply:
        if body.times < 1:
            raise serve.BadRequest("times must be at least 1")
        return Reply(text=" ".join([f"{self.prefix} {body.name}"] * body.times))

    @serve.handler("/count", method="GET")
    def count(self) -> Iterator[dict[str, int]]:
        for i in range(3):
            yield {"n": i}

    @serve.handler("/tick", method="POST")
    async def tick(self, body: Greeting) -> AsyncIterator[Reply]:
        for i in range(body.times):
            await asyncio.sleep(0)
            yield Reply(text=f"{body.name}{i}")

    @serve.handler("/boom", method="GET")
    async def boom(self) -> dict[str, str]:
        raise RuntimeError("kaput")


def _wait_ready(client: TestClient) -> None:
    for _ in range(500):
        if client.get("/ready").status_code == 200:
            return
        threading.Event().wait(0.01)
    raise AssertionError("never ready")


def test_ready_only_after_setup_then_handlers_answer() -> None:
    service = Greeter()
    with TestClient(serve.build_app(service), raise_server_exceptions=False) as client:
        assert client.get("/ready").json() == {"status": "loading"}
        loading = client.post("/greet", json={"name": "x"})
        assert loading.status_code == 503 and loading.headers["retry-after"] == "1"
        service.release.set()
        _wait_ready(client)
        assert client.post("/greet", json={"name": "ada", "times": 2}).json() == {
            "text": "hello ada hello ada"
        }
        invalid = client.post("/greet", json={"times": 2})
        assert invalid.status_code == 422 and "name" in invalid.text
        bad = client.post("/greet", json={"name": "x", "times": 0})
        assert bad.status_code == 400 and "at least 1" in bad.json()["error"]["message"]
        assert client.get("/count").text == (
            'data: {"n": 0}\n\ndata: {"n": 1}\n\ndata: {"n": 2}\n\ndata: [DONE]\n\n'
        )
        ticks = client.post("/tick", json={"name": "t", "times": 2})
        assert ticks.headers["content-type"].startswith("text/event-stream")
        assert ticks.text.splitlines()[0] == 'data: {"text":"t0"}'
        assert client.get("/boom").status_code == 500
        schema = client.get("/openapi.json").json()
        assert "/greet" in schema["paths"] and "Greeting" in str(schema)


def test_failed_setup_reports_and_stops() -> None:
    class Broken:
        @serve.setup
        def load(self) -> None:
            raise OSError("weights missing")

        @serve.handler("/x", method="GET")
        def x(self) -> dict[str, int]:
            return {}

    failures: list[BaseException] = []
    with TestClient(serve.build_app(Broken(), on_setup_failed=failures.append)) as client:
        for _ in range(500):
            if failures:
                break
            threading.Event().wait(0.01)
        health = client.get("/health")
        assert health.status_code == 500 and "weights missing" in health.json()["error"]
    assert isinstance(failures[0], OSError)


def test_a_class_without_handlers_is_refused() -> None:
    class Empty:
        pass

    with pytest.raises(ValueError, match="no handlers"):
        serve.build_app(Empty())


def test_load_target_explains_what_is_wrong(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "from corral import serve\n"
        "class Svc:\n"
        "    @serve.handler('/x', method='GET')\n"
        "    def x(self) -> dict[str, int]:\n"
        "        return {'ok': 1}\n"
        "thing = 3\n"
    )
    assert type(load_target(f"{app}:Svc")).__name__ == "Svc"
    with pytest.raises(TargetError, match=r"expected FILE\.py:Class"):
        load_target(str(app))
    with pytest.raises(TargetError, match="no such file"):
        load_target(f"{tmp_path}/missing.py:Svc")
    with pytest.raises(TargetError, match="no attribute 'Nope'"):
        load_target(f"{app}:Nope")
    with pytest.raises(TargetError, match="not a class"):
        load_target(f"{app}:thing")
