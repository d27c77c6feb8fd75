"""Gateway fixtures: every process a test starts is stopped when it ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.harness import FakeControlPlane, GatewayProc, MockReplica


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.replicas: list[MockReplica] = []
        self.planes: list[FakeControlPlane] = []
        self.gateways: list[GatewayProc] = []

    def replica(self, replica_id: str, *args: str) -> MockReplica:
        replica = MockReplica(self.tmp, replica_id, *args)
        self.replicas.append(replica)
        return replica

    def plane(self, **kwargs: object) -> FakeControlPlane:
        plane = FakeControlPlane(**kwargs)  # type: ignore[arg-type]
        self.planes.append(plane)
        return plane

    def gateway(self, plane: FakeControlPlane, *extra: str) -> GatewayProc:
        gateway = GatewayProc(self.tmp, plane.url, *extra)
        self.gateways.append(gateway)
        return gateway

    def close(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        for replica in self.replicas:
            replica.kill()
        for plane in self.planes:
            plane.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def gateway_logs(procs: Procs) -> Callable[[], str]:
    return lambda: "\n".join(g.output()[-4000:] for g in procs.gateways)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    # On failure, show the gateway's log: it says why.
    if call.when != "call" or call.excinfo is None:
        return
    procs = item.funcargs.get("procs") if hasattr(item, "funcargs") else None
    if isinstance(procs, Procs):
        logs = "\n".join(g.output()[-4000:] for g in procs.gateways)
        item.add_report_section("call", "gateway log", logs)
