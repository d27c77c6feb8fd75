"""agent/health/kmsg.py: real-format kernel log lines, and the reader on a file and dmesg."""

from __future__ import annotations

import queue
import sys
from pathlib import Path

from corral.agent.health.kmsg import (
    KernelLogReader,
    KernelSxid,
    KernelXid,
    normalize_pci,
    parse_line,
)
from corral.wire.health import SxidEvent, XidEvent

KMSG_79 = (
    "4,1234,5678901234,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, "
    "GPU has fallen off the bus."
)
DMESG_48 = (
    "[ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, "
    "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer."
)
NVLINK_145 = (
    "4,99,2000000,-;NVRM: Xid (PCI:0000:18:00): 145, pid=77, name=torchrun, "
    "NVLink: RLW error subcode=0x4 link 3"
)
SXID = "6,50,3000000,-;nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 38 ..."


def test_kmsg_record() -> None:
    parsed = parse_line(KMSG_79)
    assert isinstance(parsed, KernelXid)
    assert (parsed.pci, parsed.code, parsed.subcode) == ("0000:3b:00", 79, None)
    assert parsed.uptime_s == 5678.901234
    assert parsed.detail == "pid=1234, name=python, GPU has fallen off the bus."


def test_dmesg_line_with_unknown_pid() -> None:
    parsed = parse_line(DMESG_48)
    assert isinstance(parsed, KernelXid)
    assert (parsed.code, parsed.uptime_s) == (48, 1234.56789)
    assert parsed.detail.startswith("pid='<unknown>', name=<unknown>, An uncorrectable")


def test_nvlink_xid_with_subcode() -> None:
    parsed = parse_line(NVLINK_145)
    assert isinstance(parsed, KernelXid)
    assert (parsed.pci, parsed.code, parsed.subcode) == ("0000:18:00", 145, 4)


def test_sxid_line() -> None:
    parsed = parse_line(SXID)
    assert isinstance(parsed, KernelSxid)
    assert (parsed.pci, parsed.code, parsed.uptime_s) == ("0000:05:00", 12028, 3.0)
    assert parsed.detail.startswith("Non-fatal, Link 38")


def test_other_and_truncated_lines_are_not_events() -> None:
    assert parse_line("6,4263,25138450395,-;eth0: entered promiscuous mode") is None
    assert parse_line("[ 12.5] NVRM: loading NVIDIA UNIX x86_64 Kernel Module 550.54") is None
    assert parse_line("4,1234,5678901234,-;NVRM: Xid (PCI:0000:3b") is None
    assert parse_line("4,1234,5678901234,-;NVRM: Xid (PCI:0000:3b:00): ") is None


def test_pci_ids_from_nvml_and_the_kernel_agree() -> None:
    assert normalize_pci("00000000:3B:00.0") == normalize_pci("0000:3b:00") == "0000:3b:00"
    assert normalize_pci("00000001:18:00.0") == "0001:18:00"
    assert normalize_pci("nonsense") is None


def _reader(
    kmsg: str, dmesg: list[str]
) -> tuple[KernelLogReader, queue.Queue[tuple[str, XidEvent] | SxidEvent]]:
    got: queue.Queue[tuple[str, XidEvent] | SxidEvent] = queue.Queue()
    reader = KernelLogReader(
        lambda pci, e: got.put((pci, e)),
        got.put,
        kmsg=kmsg,
        dmesg=dmesg,
        dmesg_period_s=60,
        booted=1_700_000_000.0,
    )
    return reader, got


def test_reader_follows_a_kmsg_file_from_the_start(tmp_path: Path) -> None:
    # A regular file stands in for /dev/kmsg: one record, with a dictionary line after it.
    log = tmp_path / "kmsg"
    log.write_text(KMSG_79 + "\n SUBSYSTEM=pci\n")
    reader, got = _reader(str(log), ["false"])
    reader.start()
    try:
        pci, event = got.get(timeout=5)  # type: ignore[misc]
    finally:
        reader.close()
    assert reader.mode == "kmsg"
    assert pci == "0000:3b:00"
    assert (event.code, event.source) == (79, "kmsg")
    assert event.at == 1_700_000_000.0 + 5678.901234  # boot time + usec: same on every restart


def test_reader_falls_back_to_dmesg(tmp_path: Path) -> None:
    script = tmp_path / "dmesg.py"
    script.write_text(
        f"print({DMESG_48!r})\nprint('[ 1.0] hello')\nprint({SXID.split(';', 1)[1]!r})\n"
    )
    reader, got = _reader(str(tmp_path / "missing"), [sys.executable, str(script)])
    reader.start()
    try:
        first = got.get(timeout=10)
        second = got.get(timeout=10)
    finally:
        reader.close()
    assert reader.mode == "dmesg"
    assert isinstance(first, tuple) and first[1].code == 48
    assert first[1].at == 1_700_000_000.0 + 1234.56789
    assert isinstance(second, SxidEvent) and second.code == 12028


def test_reader_with_no_kernel_log_gives_up_quietly(tmp_path: Path) -> None:
    reader, got = _reader(str(tmp_path / "missing"), [str(tmp_path / "no-dmesg")])
    reader.start()
    assert reader._thread is not None
    reader._thread.join(timeout=10)
    assert reader.mode == "none"
    assert got.empty()
