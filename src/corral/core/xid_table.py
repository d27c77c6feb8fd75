"""The Xid table: every Xid corral knows, what it means and what it asks for, one row per
meaning. core/health.py judges with it; the CLI explains an Xid with it.

It follows NVIDIA's Xid catalog
(https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html) and GPUd's mapping of
it to repair actions (github.com/leptonai/gpud, components/accelerator/nvidia/xid). A row's
kind says what it asks for (core/health.py: `_KIND_VERDICT`): application (the program's
fault unless it repeats), reboot, reboot-then-inspect, inspect, record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

XidKind = Literal["application", "reboot", "reboot-then-inspect", "inspect", "record"]


@dataclass(frozen=True)
class XidRule:
    """One row of the table: Xids that mean the same thing and ask for the same repair."""

    codes: frozenset[int]
    meaning: str  # lower case, read inside a sentence: "fell off the bus"
    kind: XidKind
    # For NVLink Xids 144-150 the driver adds a subcode naming the failing part of the link;
    # where it is known it replaces `meaning` in the sentence.
    subcodes: tuple[tuple[int, str], ...] = ()

    def meaning_for(self, subcode: int | None) -> str:
        if subcode is None:
            return self.meaning
        for known, words in self.subcodes:
            if known == subcode:
                return words
        return f"{self.meaning} (subcode {subcode})"


def _row(kind: XidKind, meaning: str, *codes: int) -> XidRule:
    return XidRule(codes=frozenset(codes), meaning=meaning, kind=kind)


XID_RULES: tuple[XidRule, ...] = (
    # The program's fault unless it repeats (NVIDIA: restart the application).
    _row("application", "graphics engine exception", 13),
    _row("application", "GPU memory page fault", 31),
    _row("application", "GPU stopped processing", 43),
    _row("application", "NVLink privilege error", 137),
    _row("application", "interrupt seen in confidential-computing mode", 170),
    # Driver or firmware state a reboot clears.
    _row("reboot", "driver error programming the GPU", 9),
    _row("reboot", "driver error handling a GPU exception", 12),
    _row("reboot", "display engine hung", 16),
    _row("reboot", "bus mastering disabled in PCI config space", 18),
    _row("reboot", "display engine error", 19),
    _row("reboot", "framebuffer timeout", 26),
    _row("reboot", "video processor exception", 27, 28, 29, 34, 35, 36, 42, 47, 60),
    _row("reboot", "GPU semaphore access error", 30),
    _row("reboot", "internal micro-controller error", 33, 59),
    _row("reboot", "GPU stopped processing (timeout)", 46),
    _row("reboot", "internal micro-controller breakpoint", 61),
    _row("reboot", "vGPU start error", 78),
    _row("reboot", "contained ECC error", 94),
    _row("reboot", "NVLink SAW error", 144),
    _row("reboot", "NVLink RLW error", 145),
    _row("reboot", "NVLink TLW error", 146),
    _row("reboot", "NVLink TREX error", 147),
    _row("reboot", "NVLink NVLPW control error", 148),
    _row("reboot", "NVLink NETIR error", 149),
    _row("reboot", "NVLink MSE error", 150),
    _row("reboot", "key rotation error", 151),
    _row("reboot", "NVLink software-defined error", 155),
    _row("reboot", "resource retirement event", 156),
    _row("reboot", "GPU fatal timeout", 158),
    _row("reboot", "power smoothing circuitry disengaged", 163),
    _row("reboot", "NVLink traffic before the link was set up for encryption", 166),
    _row("reboot", "PCIe fatal timeout", 167),
    _row("reboot", "internal micro-controller (SEC2) halt", 169),
    _row("reboot", "uncorrectable SRAM error", 172),
    _row("reboot", "fatal error reported by newer drivers", 173),
    # Possibly hardware: a reboot may clear it once; back after a reboot, it is the hardware.
    _row("reboot-then-inspect", "corrupted push buffer stream", 32),
    _row("reboot-then-inspect", "driver firmware error", 38),
    _row("reboot-then-inspect", "graphics engine fault during context switch", 44),
    _row("reboot-then-inspect", "double-bit ECC error", 48),
    _row("reboot-then-inspect", "internal micro-controller halt", 62),
    _row("reboot-then-inspect", "row remapping event", 63),
    _row("reboot-then-inspect", "row remapping failure", 64),
    _row("reboot-then-inspect", "video processor exception", 65),
    _row("reboot-then-inspect", "NVDEC0 exception", 68),
    _row("reboot-then-inspect", "graphics engine class error", 69),
    _row("reboot-then-inspect", "NVLink error", 74),
    _row("reboot-then-inspect", "fell off the bus", 79),
    _row("reboot-then-inspect", "uncontained ECC error", 95),
    _row("reboot-then-inspect", "security fault", 110),
    _row("reboot-then-inspect", "GSP RPC timeout", 119),
    _row("reboot-then-inspect", "GSP error", 120),
    _row("reboot-then-inspect", "C2C link error", 121),
    _row("reboot-then-inspect", "SPI PMU RPC write failure", 123),
    _row("reboot-then-inspect", "unrecovered ECC error", 140),
    # Hardware: no reboot fixes it.
    _row("inspect", "VGA subsystem error", 81),
    _row("inspect", "GPU initialization failure", 143),
    # Consequences or early warnings, noted for the history.
    _row("record", "preemptive cleanup after an earlier error", 45),
    _row("record", "high single-bit ECC error rate", 92),
)

_RULE_BY_CODE: dict[int, XidRule] = {code: rule for rule in XID_RULES for code in rule.codes}
if len(_RULE_BY_CODE) != sum(len(rule.codes) for rule in XID_RULES):
    raise AssertionError("an Xid is in two rows of XID_RULES")


def xid_rule(code: int) -> XidRule | None:
    """The row for Xid `code`; None when corral's table does not know it."""
    return _RULE_BY_CODE.get(code)
