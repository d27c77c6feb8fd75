"""`corral node get` and `node ls` as people read them (cli/nodeview.py): an unhealthy GPU
with Xid 79 and what it means, a degraded GPU, reads that failed ("unknown"), values the
agent never sent ("-"), and a stored report of any shape drawn without failing."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from corral.cli.nodeview import nodes_table, print_node
from corral.wire.api import GpuView, NodeView
from corral.wire.nodes import HealthEventView, NodeDetail, NodeWorkload

NOW = 10_000.0


def _gpu(index: int, health: str = "healthy", *, allocated: bool = False) -> GpuView:
    return GpuView(
        index=index,
        model="H100",
        memory_mb=81920,
        uuid=f"gpu-{index}",
        healthy=health in ("healthy", "degraded"),
        allocated=allocated,
        health=health,
    )


def _node(**fields: Any) -> NodeView:
    base: dict[str, Any] = {
        "id": "n-1",
        "name": "gpu-a",
        "address": None,
        "condition": "ready",
        "gpu_backend": "fake",
        "gpus": [],
        "cpus": 64,
        "memory_mb": 512 * 1024,
        "disk_mb": 100_000,
        "labels": {},
        "agent_version": "0.1",
        "connected": True,
        "last_heartbeat_at": NOW - 3,
        "heartbeat_age_s": 3.0,
        "registered_at": 1.0,
    }
    return NodeView(**{**base, **fields})


def _signals(index: int, **fields: Any) -> dict[str, Any]:
    healthy = {
        "index": index,
        "uuid": f"gpu-{index}",
        "utilization_pct": 87.4,
        "temperature_c": 61.0,
        "power_w": 402.6,
        "ecc_volatile_uncorrected": 0,
        "ecc_volatile_corrected": 2,
        "remapped_rows_pending": False,
        "remapped_rows_failed": False,
        "nvlink_down": [],
        "throttle": [],
        "unknown": [],
    }
    return {**healthy, **fields}


def _sick_node() -> NodeDetail:
    """GPU 0 fell off the bus (Xid 79), GPU 1 runs hot and throttled, GPU 2's reads failed."""
    node = _node(
        condition="unhealthy",
        health="unhealthy",
        health_summary="GPU 0: Xid 79, fell off the bus: reboot the node",
        cordon_reason="cordoned before its checks failed",
        gpus=[_gpu(0, "unhealthy", allocated=True), _gpu(1, "degraded"), _gpu(2, "unknown")],
    )
    xid = HealthEventView(
        at=NOW - 120, kind="xid", text="GPU 0: Xid 79, fell off the bus", gpu=0, code=79
    )
    return NodeDetail(
        node=node,
        repair="reboot-node",
        needs_operator=False,
        findings=[
            {
                "gpu": 0,
                "signal": "xid",
                "health": "unhealthy",
                "repair": "reboot-node",
                "sentence": "GPU 0: Xid 79, fell off the bus: reboot the node",
                "code": 79,
            },
            {
                "gpu": 1,
                "signal": "throttle",
                "health": "degraded",
                "repair": "none",
                "sentence": "GPU 1: throttled (hw_thermal)",
                "code": None,
            },
            {"gpu": 2, "health": "healthy", "repair": "none", "sentence": "GPU 2: fine"},
        ],
        signals={
            "gpus": [
                _signals(0, present=False, ecc_volatile_uncorrected=3, remapped_rows_failed=True),
                _signals(1, temperature_c=93.2, throttle=["hw_thermal"], nvlink_down=[2, 5]),
                _signals(
                    2,
                    utilization_pct=None,
                    temperature_c=None,
                    power_w=None,
                    ecc_volatile_corrected=None,
                    unknown=["utilization", "temperature", "ecc_volatile_corrected"],
                ),
            ],
            "node": {
                "disks": [
                    {
                        "path": "/var/lib/corral",
                        "role": "workload",
                        "free_mb": 12 * 1024,
                        "total_mb": 100 * 1024,
                    }
                ],
                "memory_available_pct": 37.2,
                "d_state": 2,
                "d_state_names": ["nfsd"],
                "unknown": ["disk:checkpoint"],
            },
        },
        health_at=NOW - 5,
        boot_id="boot-7f3a",
        last_xid={"0": xid},
        events=[
            HealthEventView(
                at=NOW - 119,
                kind="action",
                text="cordoned by corral: GPU 0: Xid 79, fell off the bus: reboot the node",
                health="unhealthy",
                workloads=["default/train"],
            ),
            xid,
        ],
        workloads=[
            NodeWorkload(
                workspace="default", job="train", kind="job", rank=0, gpus=[0], state="running"
            )
        ],
    )


def _text(detail: NodeDetail) -> str:
    console = Console(record=True, width=220, no_color=True)
    print_node(console, detail, NOW)
    return console.export_text()


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(start))


def test_the_header_says_condition_health_repair_and_report_ages() -> None:
    text = _text(_sick_node())
    assert "unhealthy — cordoned before its checks failed" in _line(text, "condition")
    assert "unhealthy — GPU 0: Xid 79, fell off the bus: reboot the node" in _line(text, "health")
    repair = _line(text, "repair")
    assert "reboot-node" in repair and "operator must act" not in repair
    assert "3s ago" in _line(text, "heartbeat")
    assert "boot-7f3a" in _line(text, "boot id")
    assert "5s ago" in _line(text, "last report")


def test_an_unhealthy_gpu_with_xid_79_shows_its_signals_and_what_the_xid_means() -> None:
    row = _line(_text(_sick_node()), "0 ")
    for cell in ("H100", "unhealthy", "(gone)", "yes", "87%", "61°C", "403W", "3/2", "no/yes"):
        assert cell in row, (cell, row)
    assert "79 fell off the bus (2m00s ago)" in row


def test_a_degraded_gpu_shows_its_heat_and_links_down() -> None:
    row = _line(_text(_sick_node()), "1 ")
    for cell in ("degraded", "93°C", "2, 5", "0/2", "no/no"):
        assert cell in row, (cell, row)
    assert row.rstrip().endswith("-")  # no Xid seen


def test_failed_reads_say_unknown_and_signals_never_sent_say_dash() -> None:
    row = _line(_text(_sick_node()), "2 ")
    cells = row.split()
    assert cells[:3] == ["2", "H100", "unknown"]
    assert cells.count("unknown") == 3  # health, utilization, temperature
    assert "0/unknown" in row  # ECC: uncorrected read, corrected failed
    assert " - " in row  # power: not sent, not named as failed


def test_findings_node_signals_workloads_and_events_are_listed() -> None:
    text = _text(_sick_node())
    assert "• GPU 1: throttled (hw_thermal)" in text
    assert "GPU 2: fine" not in text  # a healthy finding says nothing
    assert "12Gi free of 100Gi · /var/lib/corral" in _line(text, "disk (workload)")
    assert "unknown" in _line(text, "disk (checkpoint)")
    assert "37%" in _line(text, "memory available")
    assert "2 (nfsd)" in _line(text, "D-state processes")
    assert "default/train" in _line(text, "default/train")
    assert "job" in _line(text, "default/train") and "running" in _line(text, "default/train")
    action = _line(text, "1m59s ago")
    assert "action" in action and "cordoned by corral" in action and "default/train" in action
    assert "GPU 0: Xid 79, fell off the bus" in _line(text, "2m00s ago")


def test_a_node_without_a_report_renders_dashes_and_unknown_health() -> None:
    detail = NodeDetail(node=_node(gpus=[_gpu(0, "unknown")]), signals=None)
    text = _text(detail)
    assert "unknown" in _line(text, "health")
    assert "never" in _line(text, "last report")
    assert "-" in _line(text, "boot id")
    row = _line(text, "0 ")
    assert row.split()[:3] == ["0", "H100", "unknown"]
    assert row.split()[4:] == ["-", "-", "-", "-/-", "-/-", "-", "-"]
    assert "-" in _line(text, "memory available") and "-" in _line(text, "disks")
    assert "nothing runs here" in text and "no health events" in text


@pytest.mark.parametrize(
    "signals",
    [
        {},
        {"gpus": None, "node": None},
        {"gpus": "x", "node": []},
        {"gpus": [None, 3, {"index": "0"}, {"index": 0, "temperature_c": "hot"}]},
        {"node": {"disks": [None, {"role": "state"}], "d_state": True, "d_state_names": 5}},
        {"gpus": [{"index": 0, "unknown": ["nvml"]}]},
    ],
)
def test_a_report_of_any_shape_renders_without_failing(signals: dict[str, Any]) -> None:
    detail = NodeDetail(
        node=_node(gpus=[_gpu(0)]),
        signals=signals,
        findings=[{"sentence": None}, {"health": None, "sentence": "GPU 0: odd"}],
    )
    text = _text(detail)
    assert "gpu-a" in text and "• GPU 0: odd" in text


def test_a_gpu_whose_whole_read_failed_is_unknown_everywhere() -> None:
    detail = NodeDetail(
        node=_node(gpus=[_gpu(0, "unknown")]),
        signals={"gpus": [{"index": 0, "uuid": "gpu-0", "unknown": ["device"]}]},
    )
    row = _line(_text(detail), "0 ")
    assert row.split()[4:8] == ["unknown", "unknown", "unknown", "unknown/unknown"]


def test_an_operator_is_asked_to_act_on_inspect_hardware() -> None:
    detail = NodeDetail(
        node=_node(name="gpu-b", condition="unhealthy", health="unhealthy"),
        repair="inspect-hardware",
        needs_operator=True,
        repair_claim_at=NOW - 1,
    )
    repair = _line(_text(detail), "repair")
    assert "inspect-hardware · an operator must act" in repair
    assert "corral node set-healthy gpu-b" in repair and "checking" in repair


def _table(nodes: list[NodeView], *, wide: bool = False) -> str:
    console = Console(record=True, width=220, no_color=True)
    console.print(nodes_table(nodes, NOW, wide=wide))
    return console.export_text()


def test_node_ls_has_a_health_column_and_says_compactly_why_a_node_is_out() -> None:
    summary = "GPU 0: Xid 79, fell off the bus: reboot the node (and 2 more)"
    nodes = [
        _node(name="a-ok", health="healthy", health_summary="healthy"),
        _node(
            name="b-sick",
            condition="unhealthy",
            health="unhealthy",
            health_summary=summary,
            gpus=[_gpu(0, "unhealthy")],
        ),
        _node(name="c-held", condition="cordoned", health="degraded", cordon_reason="maint"),
        _node(name="d-new"),
    ]
    text = _table(nodes)
    header = _line(text, "NAME")
    assert header.split()[:3] == ["NAME", "CONDITION", "HEALTH"]
    assert _line(text, "a-ok").split()[1:3] == ["ready", "healthy"]
    sick = _line(text, "b-sick")
    assert "unhealthy (GPU 0: Xid 79, fell off the" in sick and "…)" in sick
    assert "(and 2 more)" not in sick  # cut short: --wide shows it whole
    assert "0/1 (1 unhealthy)" in sick
    assert "cordoned (maint)" in _line(text, "c-held") and "degraded" in _line(text, "c-held")
    assert _line(text, "d-new").split()[1:3] == ["ready", "unknown"]

    wide = _table(nodes, wide=True)
    assert _line(wide, "NAME").split()[-1] == "WHY"
    assert summary in _line(wide, "b-sick")
    assert _line(wide, "c-held").rstrip().endswith("maint")
    assert _line(wide, "a-ok").rstrip().endswith("-")
