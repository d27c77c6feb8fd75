"""How nodes look in a terminal: the `node ls` table and the `node get` page.

The page reads the node's last health report (`NodeDetail.signals`, stored JSON) defensively:
a value the agent did not send is "-", a read that failed (named in the report's `unknown`)
is "unknown", and nothing in that JSON can make the page fail.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any, TypeGuard

from corral.cli.output import CONDITION_STYLE, age, duration, esc, format_mib, styled, table

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from corral.wire.api import GpuView, NodeView
    from corral.wire.nodes import HealthEventView, NodeDetail

# Colour is decoration only: every health is also written out as a word.
HEALTH_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "unknown": "dim"}
# The reason in `node ls`'s CONDITION cell is cut here; `--wide` shows it whole.
REASON_WIDTH = 32
EVENTS_SHOWN = 10
MISSING = "-"
UNKNOWN = "unknown"
# What the agent names a failed read of the whole GPU (agent/health/nvml.py): every
# signal of that GPU is then unknown.
_WHOLE_GPU_UNKNOWN = frozenset({"nvml", "device"})


# -- node ls ----------------------------------------------------------------------------------


def gpu_summary(node: NodeView) -> str:
    """E.g. `8×H100 (fake)`; models are counted apart when a node mixes them."""  # noqa: RUF002
    if not node.gpus:
        return MISSING
    counts = Counter(g.model for g in node.gpus)
    text = ", ".join(f"{n}×{model}" for model, n in counts.items())
    if node.gpu_backend not in ("nvml", "none", ""):
        text += f" ({node.gpu_backend})"
    return text


def gpu_use(node: NodeView) -> str:
    if not node.gpus:
        return MISSING
    used = sum(1 for g in node.gpus if g.allocated)
    text = f"{used}/{len(node.gpus)}"
    sick = sum(1 for g in node.gpus if not g.healthy)
    if sick:
        text += f" [red]({sick} unhealthy)[/]"
    return text


def heartbeat(node: NodeView, now: float) -> str:
    age_s = node.heartbeat_age_s
    if age_s is None and node.last_heartbeat_at is not None:
        age_s = now - node.last_heartbeat_at
    if age_s is None:
        return "never"
    text = f"{duration(max(0.0, age_s))} ago"
    return text if node.connected else f"{text} [dim](disconnected)[/]"


def health_text(health: str | None) -> str:
    shown = health or UNKNOWN
    return styled(shown, HEALTH_STYLE.get(shown))


def why_out(node: NodeView) -> str | None:
    """Why the node takes no new work, in words; None when it does (or nobody said)."""
    if node.condition == "unhealthy":
        return node.health_summary or node.cordon_reason or "its checks fail"
    if node.condition in ("cordoned", "lost"):
        return node.cordon_reason
    return None


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def condition_text(node: NodeView, width: int | None = REASON_WIDTH) -> str:
    """The condition, and why it is out of service (cut to `width`; None: whole)."""
    text = styled(node.condition, CONDITION_STYLE.get(node.condition))
    why = why_out(node)
    if why:
        shown = why if width is None else clip(why, width)
        text += f" [dim]({esc(shown)})[/]"
    return text


def nodes_table(
    nodes: list[NodeView], now: float | None = None, *, wide: bool = False
) -> RenderableType:
    """One row a node. The CONDITION cell says why a node is out, cut short; `wide` leaves
    the condition alone and adds a WHY column with the whole reason and health summary."""
    now = time.time() if now is None else now
    extra = ("RUNTIME", "WHY") if wide else ()
    t = table(
        "NAME", "CONDITION", "HEALTH", "GPUS", "ALLOCATED", "CPUS", "MEMORY", "HEARTBEAT", *extra
    )
    for n in sorted(nodes, key=lambda n: n.name):
        row = [
            esc(n.name),
            styled(n.condition, CONDITION_STYLE.get(n.condition)) if wide else condition_text(n),
            health_text(n.health),
            esc(gpu_summary(n)),
            gpu_use(n),
            f"{n.cpus:g}",
            format_mib(n.memory_mb),
            heartbeat(n, now),
        ]
        if wide:
            row += [esc(runtime_text(n, short=True)), esc(_why_whole(n))]
        t.add_row(*row)
    return t


def _why_whole(node: NodeView) -> str:
    parts: list[str] = []
    if node.cordon_reason:
        parts.append(node.cordon_reason)
    if node.health_summary and node.health_summary != "healthy":
        parts.append(node.health_summary)
    return " · ".join(parts) or MISSING


# -- node get ---------------------------------------------------------------------------------


def print_node(console: Console, detail: NodeDetail, now: float | None = None) -> None:
    """The whole page: header, GPUs, node signals, workloads, latest health events."""
    now = time.time() if now is None else now
    console.print(header(detail, now))
    console.print()
    console.print(gpus_table(detail, now))
    findings = finding_lines(detail)
    if findings:
        console.print()
        for line in findings:
            console.print(line)
    console.print()
    console.print(signals_grid(detail))
    console.print()
    console.print(workloads_section(detail))
    console.print()
    console.print(events_section(detail, now))


def header(detail: NodeDetail, now: float) -> RenderableType:
    from rich.table import Table

    node = detail.node
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("name", esc(node.name))
    condition = styled(node.condition, CONDITION_STYLE.get(node.condition))
    if node.cordon_reason:
        condition += f" — {esc(node.cordon_reason)}"
    grid.add_row("condition", condition)
    health = health_text(node.health)
    if node.health_summary and node.health_summary != node.health:
        health += f" — {esc(node.health_summary)}"
    grid.add_row("health", health)
    grid.add_row("repair", repair_text(detail, now))
    grid.add_row("gpus", gpus_line(node))
    grid.add_row("resources", f"{node.cpus:g} CPUs · {format_mib(node.memory_mb)} memory")
    if node.address:
        grid.add_row("address", esc(node.address))
    grid.add_row("heartbeat", heartbeat(node, now))
    grid.add_row("boot id", esc(detail.boot_id or MISSING))
    grid.add_row("last report", age(detail.health_at, now) if detail.health_at else "never")
    grid.add_row("container runtime", esc(runtime_text(node)))
    if node.agent_version:
        grid.add_row("agent", esc(node.agent_version))
    return grid


def runtime_text(node: NodeView, *, short: bool = False) -> str:
    """`podman 4.3.1 (GPUs)`, several joined by commas, or `none`; `short`: names only
    (`podman+gpus`) for the wide `node ls`.

    Read defensively (models or stored dicts, a server that sends none): an image job is
    placed only where this is not `none`.
    """
    shown: list[str] = []
    for runtime in getattr(node, "runtimes", None) or ():
        item = runtime if isinstance(runtime, dict) else getattr(runtime, "__dict__", {})
        name = str(item.get("name") or "")
        if not name:
            continue
        gpus = item.get("gpus") is True
        if short:
            shown.append(name + ("+gpus" if gpus else ""))
        else:
            version = str(item.get("version") or "")
            shown.append(" ".join(filter(None, (name, version))) + (" (GPUs)" if gpus else ""))
    return ", ".join(shown) or ("-" if short else "none")


def gpus_line(node: NodeView) -> str:
    """`8×H100 (fake) · 3 of 8 allocated · 1 out of scheduling`."""  # noqa: RUF002
    if not node.gpus:
        return "none"
    used = sum(1 for g in node.gpus if g.allocated)
    text = f"{esc(gpu_summary(node))} · {used} of {len(node.gpus)} allocated"
    out = sum(1 for g in node.gpus if not g.healthy)
    return text + (f" · [red]{out} out of scheduling[/]" if out else "")


def repair_text(detail: NodeDetail, now: float) -> str:
    repair = detail.repair or "none"
    text = esc(repair)
    if detail.needs_operator:
        text += (
            " [bold red]· an operator must act[/]: repair it, then "
            f"`corral node set-healthy {esc(detail.node.name)}`"
        )
    elif repair != "none":
        text += " [dim](it comes back by itself once its checks pass)[/]"
    if detail.repair_claim_at is not None:
        text += f" · set-healthy {age(detail.repair_claim_at, now)}: checking"
    return text


def gpus_table(detail: NodeDetail, now: float) -> RenderableType:
    from rich.text import Text

    if not detail.node.gpus:
        return Text.from_markup("[dim]no GPUs[/]")
    reports = _gpu_reports(detail.signals)
    t = table(
        "GPU",
        "MODEL",
        "HEALTH",
        "ALLOC",
        "UTIL",
        "TEMP",
        "POWER",
        "ECC UNC/COR",
        "REMAP PEND/FAIL",
        "NVLINK DOWN",
        "LAST XID",
    )
    for gpu in sorted(detail.node.gpus, key=lambda g: g.index):
        sig = reports.get(gpu.index)
        t.add_row(
            str(gpu.index),
            esc(gpu.model),
            _gpu_health(gpu, sig),
            "yes" if gpu.allocated else "no",
            _read(sig, "utilization_pct", "utilization", lambda v: f"{v:.0f}%"),
            _read(sig, "temperature_c", "temperature", lambda v: f"{v:.0f}°C"),
            _read(sig, "power_w", "power", lambda v: f"{v:.0f}W"),
            _pair(
                _read(sig, "ecc_volatile_uncorrected", "ecc_volatile_uncorrected", _count),
                _read(sig, "ecc_volatile_corrected", "ecc_volatile_corrected", _count),
            ),
            _pair(
                _read(sig, "remapped_rows_pending", "remapped_rows", _yes_no),
                _read(sig, "remapped_rows_failed", "remapped_rows", _yes_no),
            ),
            _read(sig, "nvlink_down", "nvlink", _links),
            last_xid_text(detail.last_xid.get(str(gpu.index)), now),
        )
    return t


def _gpu_health(gpu: GpuView, sig: dict[str, Any] | None) -> str:
    text = health_text(gpu.health)
    if sig is not None and sig.get("present") is False:
        text += " [red](gone)[/]"
    return text


def last_xid_text(event: HealthEventView | None, now: float) -> str:
    """`79 fell off the bus (3m ago)`: the code, what it means, when."""
    if event is None or event.code is None:
        return MISSING
    return f"{event.code} {esc(xid_meaning(event.code))} [dim]({age(event.at, now)})[/]"


def xid_meaning(code: int) -> str:
    from corral.core.health import xid_rule

    rule = xid_rule(code)
    return rule.meaning if rule is not None else "not in corral's Xid table"


def finding_lines(detail: NodeDetail) -> list[str]:
    """The judgement's findings that are not plain "healthy", in its order (worst first)."""
    lines: list[str] = []
    for f in detail.findings:
        health = str(f.get("health") or UNKNOWN)
        repair = str(f.get("repair") or "none")
        sentence = f.get("sentence")
        if not sentence or (health == "healthy" and repair == "none"):
            continue
        lines.append(f"{styled('•', HEALTH_STYLE.get(health))} {esc(sentence)}")
    return lines


def signals_grid(detail: NodeDetail) -> RenderableType:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    node = _dict((detail.signals or {}).get("node")) if detail.signals is not None else None
    unknown = _names(node.get("unknown")) if node is not None else set()
    for line in disk_lines(node, unknown):
        grid.add_row(*line)
    memory = node.get("memory_available_pct") if node is not None else None
    if _number(memory):
        grid.add_row("memory available", f"{memory:.0f}%")
    else:
        grid.add_row("memory available", UNKNOWN if "memory" in unknown else MISSING)
    d_state = node.get("d_state") if node is not None else None
    if _number(d_state):
        named = node.get("d_state_names") if node is not None else None
        names = [str(n) for n in named if n] if isinstance(named, list) else []
        listed = f" [dim]({esc(', '.join(names[:5]))})[/]" if names and d_state else ""
        grid.add_row("D-state processes", f"{int(d_state)}{listed}")
    else:
        grid.add_row("D-state processes", UNKNOWN if "d_state" in unknown else MISSING)
    return grid


def disk_lines(node: dict[str, Any] | None, unknown: set[str]) -> list[tuple[str, str]]:
    """`disk (workload)`, `12Gi free of 100Gi · /var/lib/corral` per disk the agent checks."""
    disks = node.get("disks") if node is not None else None
    lines: list[tuple[str, str]] = []
    for d in disks if isinstance(disks, list) else []:
        disk = _dict(d)
        if disk is None:
            continue
        free, total = disk.get("free_mb"), disk.get("total_mb")
        room = (
            f"{format_mib(int(free))} free of {format_mib(int(total))}"
            if _number(free) and _number(total)
            else MISSING
        )
        path = f" · {esc(disk['path'])}" if disk.get("path") else ""
        lines.append((f"disk ({esc(disk.get('role') or '?')})", room + path))
    for name in sorted(n for n in unknown if n.startswith("disk:")):
        lines.append((f"disk ({esc(name.split(':', 1)[1])})", UNKNOWN))
    if not lines:
        lines.append(("disks", MISSING))
    return lines


def workloads_section(detail: NodeDetail) -> RenderableType:
    from rich.text import Text

    if not detail.workloads:
        return Text.from_markup("[dim]nothing runs here[/]")
    t = table("WORKLOAD", "KIND", "RANK", "GPUS", "STATE")
    for w in detail.workloads:
        t.add_row(
            esc(f"{w.workspace}/{w.job}"),
            esc(w.kind),
            str(w.rank),
            ",".join(str(g) for g in w.gpus) or MISSING,
            esc(w.state),
        )
    return t


def events_section(detail: NodeDetail, now: float) -> RenderableType:
    from rich.text import Text

    if not detail.events:
        return Text.from_markup("[dim]no health events[/]")
    t = table("WHEN", "KIND", "EVENT", "WORKLOADS")
    for e in detail.events[:EVENTS_SHOWN]:  # newest first, as the server sends them
        style = HEALTH_STYLE.get(e.health) if e.health else None
        t.add_row(
            age(e.at, now),
            esc(e.kind),
            styled(e.text, style),
            esc(", ".join(e.workloads)) or MISSING,
        )
    return t


# -- reading the stored report defensively ----------------------------------------------------


def _dict(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _names(value: object) -> set[str]:
    return {str(v) for v in value} if isinstance(value, list) else set()


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _gpu_reports(signals: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """GPU index -> its entry in the report; entries without a readable index are skipped."""
    found: dict[int, dict[str, Any]] = {}
    gpus = (signals or {}).get("gpus") if isinstance(signals, dict) else None
    for entry in gpus if isinstance(gpus, list) else []:
        sig = _dict(entry)
        if sig is not None and isinstance(sig.get("index"), int):
            found[sig["index"]] = sig
    return found


def _read(sig: dict[str, Any] | None, field: str, read_name: str, shown: Any) -> str:
    """A GPU's signal for people: `shown(value)`; "unknown" when its read failed; "-" when
    the report has no value (no report, or a signal the GPU does not have)."""
    if sig is None:
        return MISSING
    value = sig.get(field)
    if value is not None:
        try:
            return str(shown(value))
        except (TypeError, ValueError):
            return MISSING
    unknown = _names(sig.get("unknown"))
    if read_name in unknown or unknown & _WHOLE_GPU_UNKNOWN:
        return f"[dim]{UNKNOWN}[/]"
    return MISSING


def _count(value: object) -> str:
    if not _number(value):
        raise ValueError(value)
    n = int(value)
    return f"[red]{n}[/]" if n else "0"


def _yes_no(value: object) -> str:
    if not isinstance(value, bool):
        raise ValueError(value)
    return "[red]yes[/]" if value else "no"


def _links(value: object) -> str:
    if not isinstance(value, list):
        raise ValueError(value)
    return f"[red]{esc(', '.join(str(v) for v in value))}[/]" if value else "none"


def _pair(first: str, second: str) -> str:
    return f"{first}/{second}"
