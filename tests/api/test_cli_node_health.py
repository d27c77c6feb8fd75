"""`corral node get|drain|set-healthy|delete|inject-fault` against the real control plane
in-process. Nodes are registered without an agent (support.store.register_node); where a test
needs the agent's side of the channel (set-healthy waits for the node's checks), a stand-in
connection on the hub answers `check_now` with a health report, as an agent would."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner, Result

from corral.cli.config import CliDeps
from corral.cli.main import build_app
from corral.server.services import health
from corral.server.store.db import Store
from corral.server.store.tables import Node
from corral.wire.health import GpuSignals, HealthReport, XidEvent
from support.app import ADMIN_TOKEN
from support.cli import Cli, submit_job
from support.cluster import wait_for
from support.store import register_node


def _store(server: TestClient) -> Store:
    return server.app.state.cp.store  # type: ignore[attr-defined,no-any-return]


def _report(name: str, *, boot: str = "boot-1", xid: int | None = None) -> HealthReport:
    """A full report of `name`'s two GPUs, GPU 0 with Xid `xid` (this boot)."""
    xids = [XidEvent(code=xid, at=time.time(), source="fake")] if xid is not None else []
    return HealthReport(
        sent_at=time.time(),
        boot_id=boot,
        full=True,
        backend="fake",
        gpus=[
            GpuSignals(
                index=i,
                uuid=f"{name}-{i}",
                utilization_pct=55.0,
                temperature_c=48.0,
                power_w=310.0,
                throttle=[],
                ecc_volatile_uncorrected=0,
                ecc_volatile_corrected=0,
                remapped_rows_pending=False,
                remapped_rows_failed=False,
                nvlink_down=[],
                xids=xids if i == 0 else [],
            )
            for i in range(2)
        ],
    )


def _record(server: TestClient, node_id: str, report: HealthReport) -> None:
    with _store(server).transaction() as session:
        health.record_health(session, node_id, report, time.time())


def _one_error_line(result: Result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 or lines[1].startswith("hint:"), result.output
    return lines[0]


def _row(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith(start))


def test_node_get_of_a_node_that_never_reported_says_unknown(cli: Cli, server: TestClient) -> None:
    register_node(_store(server), "n1", gpus=2)
    shown = cli("node", "get", "n1")
    assert shown.exit_code == 0, shown.output
    assert "unknown" in _row(shown.stdout, "health")
    assert "never" in _row(shown.stdout, "last report")
    for index in ("0", "1"):
        gpu = _row(shown.stdout, f"{index} ").split()
        assert gpu[:3] == [index, "H100", "unknown"] and gpu[-1] == "-"
    assert "nothing runs here" in shown.stdout
    data = json.loads(cli("node", "get", "n1", "--json").stdout)
    assert data["node"]["name"] == "n1" and data["node"]["health"] == "unknown"
    assert data["signals"] is None
    missing = cli("node", "get", "nope")
    assert missing.exit_code == 1 and _one_error_line(missing) == "error: node 'nope' not found"


def test_an_xid_79_report_shows_in_node_get_and_node_ls(cli: Cli, server: TestClient) -> None:
    node_id = register_node(_store(server), "n1", gpus=2)
    _record(server, node_id, _report("n1", xid=79))
    shown = cli("node", "get", "n1")
    assert shown.exit_code == 0, shown.output
    assert _row(shown.stdout, "condition").split()[1] == "unhealthy"
    assert "GPU 0: Xid 79, fell off the bus" in _row(shown.stdout, "health")
    assert "reboot-node" in _row(shown.stdout, "repair")
    gpu0 = _row(shown.stdout, "0 ")
    assert "unhealthy" in gpu0 and "79 fell off the bus" in gpu0
    assert "55%" in gpu0 and "48°C" in gpu0 and "310W" in gpu0
    gpu1 = _row(shown.stdout, "1 ")
    assert "healthy" in gpu1 and "unhealthy" not in gpu1 and gpu1.rstrip().endswith("-")
    events = [line.split() for line in shown.stdout.splitlines() if " ago " in line]
    assert any(e[2:9] == ["xid", "GPU", "0:", "Xid", "79,", "fell", "off"] for e in events)
    assert any(e[2:5] == ["action", "cordoned", "by"] for e in events)

    listed = cli("node", "ls")
    assert listed.exit_code == 0, listed.output
    assert _row(listed.stdout, "NAME").split()[:3] == ["NAME", "CONDITION", "HEALTH"]
    row = _row(listed.stdout, "n1")
    assert row.split()[1] == "unhealthy" and "(GPU 0: Xid 79" in row
    assert "unhealthy  " in row.split(")", 1)[1]  # the HEALTH cell, after the reason
    wide = cli("node", "ls", "--wide")
    assert "GPU 0: Xid 79, fell off the bus: reboot the node" in _row(wide.stdout, "n1")


def test_faults_go_only_to_a_connected_fake_gpu_node(cli: Cli, server: TestClient) -> None:
    register_node(_store(server), "fake1", gpus=2)
    register_node(_store(server), "real1", gpus=2)
    with _store(server).transaction() as session:
        session.execute(update(Node).where(Node.name == "real1").values(gpu_backend="nvml"))
    refused = cli("node", "inject-fault", "real1", "--gpu", "0", "--xid", "79")
    assert refused.exit_code == 1
    line = _one_error_line(refused)
    assert "has nvml GPUs, not fake ones" in line and "--fake-gpus" in line
    unheard = cli("node", "inject-fault", "fake1", "--gpu", "0", "--thermal")
    assert unheard.exit_code == 1
    assert "its agent must be running to inject" in _one_error_line(unheard)


def test_inject_fault_takes_exactly_one_fault(cli: Cli, server: TestClient) -> None:
    register_node(_store(server), "n1", gpus=2)
    none = cli("node", "inject-fault", "n1", "--gpu", "0")
    assert none.exit_code == 2
    assert _one_error_line(none).startswith("error: inject-fault needs a fault: --xid CODE")
    several = cli("node", "inject-fault", "n1", "--gpu", "0", "--ecc", "--vanish")
    assert several.exit_code == 2
    assert "one fault at a time, not --ecc, --vanish" in _one_error_line(several)
    stray = cli("node", "inject-fault", "n1", "--gpu", "0", "--ecc", "--subcode", "3")
    assert stray.exit_code == 2 and "--subcode goes with --xid" in _one_error_line(stray)
    helped = cli("node", "inject-fault", "--help")
    assert "fake-GPU node" in helped.stdout and "cluster admins" in helped.stdout


def test_drain_an_idle_node_then_delete_it(cli: Cli, server: TestClient) -> None:
    register_node(_store(server), "n1", gpus=2)
    drained = cli("node", "drain", "n1")
    assert drained.exit_code == 0, drained.output
    assert "node 'n1' drained: 0 job(s) queued again elsewhere" in drained.output
    assert cli.sdk().get_node("n1").node.condition == "cordoned"
    deleted = cli("node", "delete", "n1", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted node n1" in deleted.output
    assert "n1" not in cli("node", "ls").output
    gone = cli("node", "get", "n1")
    assert gone.exit_code == 1 and "node 'n1' not found" in gone.output


def test_delete_refuses_while_replicas_run_and_drain_moves_them(
    cli: Cli, server: TestClient
) -> None:
    register_node(_store(server), "n1", gpus=2)
    submit_job(server, "train", resources={"gpus": "H100:1"})
    wait_for("the job to be placed", lambda: cli.sdk().get_job("train").state != "pending")
    on_node = cli("node", "get", "n1")
    assert "default/train" in _row(on_node.stdout, "default/train")
    refused = cli("node", "delete", "n1", "--yes")
    assert refused.exit_code == 1
    line = _one_error_line(refused)
    assert "node 'n1' still runs replicas: drain it first" in line
    drained = cli("node", "drain", "n1")
    assert "node 'n1' drained: 1 job(s) queued again elsewhere" in drained.output
    assert cli.sdk().get_job("train").state == "pending"
    # The replica is told to stop, but only its agent can say it has: until then it may
    # still run there, and the node stays.
    assert cli("node", "delete", "n1", "--yes").exit_code == 1
    assert [n.name for n in cli.sdk().list_nodes()] == ["n1"]


def test_delete_asks_first(cli: Cli, server: TestClient, tmp_path: Path) -> None:
    register_node(_store(server), "n1")

    def answer(text: str) -> Result:
        app = build_app(CliDeps(client_factory=cli.client, home=cli.home))
        env = {"CORRAL_TOKEN": ADMIN_TOKEN, "NO_COLOR": "1", "CORRAL_SERVER": None}
        return CliRunner().invoke(app, ["node", "delete", "n1"], env=env, input=text)

    kept = answer("n\n")
    assert kept.exit_code == 1 and "delete node n1?" in kept.output
    assert "not deleted" in kept.output
    assert answer("").exit_code == 1  # no answer is not a yes
    assert [n.name for n in cli.sdk().list_nodes()] == ["n1"]
    gone = answer("y\n")
    assert gone.exit_code == 0, gone.output
    assert cli.sdk().list_nodes() == []


def test_set_healthy_without_an_agent_is_still_checking(cli: Cli, server: TestClient) -> None:
    node_id = register_node(_store(server), "n1", gpus=2)
    _record(server, node_id, _report("n1", xid=79))
    done = cli("node", "set-healthy", "n1")
    assert done.exit_code == 0, done.output
    assert "checking: its agent is not connected" in done.output
    assert "corral node get n1" in done.output
    assert "set-healthy" in _row(cli("node", "get", "n1").stdout, "repair")


def _agent_reports(server: TestClient, node_id: str, report: HealthReport) -> None:
    """A stand-in agent connection: `check_now` is answered with `report`, recorded."""

    async def send(text: str) -> None:
        if json.loads(text).get("type") == "check_now":
            await asyncio.to_thread(_record, server, node_id, report)

    hub = server.app.state.cp.hub  # type: ignore[attr-defined]
    server.portal.call(hub.attach, node_id, send)  # type: ignore[union-attr]


def test_set_healthy_exits_1_while_checks_fail_and_0_once_they_pass(
    cli: Cli, server: TestClient
) -> None:
    node_id = register_node(_store(server), "n1", gpus=2)
    _record(server, node_id, _report("n1", xid=79))
    _agent_reports(server, node_id, _report("n1", xid=79))  # same boot: Xid 79 still there
    failed = cli("node", "set-healthy", "n1")
    assert failed.exit_code == 1, failed.output
    line = _one_error_line(failed)
    assert "node 'n1' stays out: checks still fail: GPU 0: Xid 79, fell off the bus" in line
    assert cli.sdk().get_node("n1").node.condition == "unhealthy"

    _agent_reports(server, node_id, _report("n1", boot="boot-2"))  # rebooted: clean
    back = cli("node", "set-healthy", "n1")
    assert back.exit_code == 0, back.output
    assert "node 'n1' is in service again: its checks pass" in back.output
    assert cli.sdk().get_node("n1").node.condition == "ready"
