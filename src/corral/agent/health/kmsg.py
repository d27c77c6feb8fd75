"""Xid and SXid lines from the kernel log: parsing, and a reader that follows it.

`/dev/kmsg` records are `PRIORITY,SEQ,USEC,FLAGS;MESSAGE` (USEC: since boot); `dmesg` lines
are `[SECONDS.USEC] MESSAGE`. The driver writes, for example:

    NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.
    nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 38 ...

An event's time is the boot time plus the record's time since boot, so an agent restarted
in the same boot re-reads the same Xids with the same times (the server de-duplicates on
them); `time.time()` only when a line carries no timestamp.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.wire.health import TEXT_MAX, SxidEvent, XidEvent

log = logging.getLogger("corral.agent.health")

KMSG = "/dev/kmsg"
DMESG = ("dmesg",)
DMESG_PERIOD_S = 10.0
POLL_S = 0.5  # how long the reader blocks before looking at its stop flag
RECORD_MAX = 8192  # one /dev/kmsg record; a smaller buffer is EINVAL

_KMSG = re.compile(r"^\d+,\d+,(?P<usec>\d+),[^;]*;(?P<msg>.*)$")
_DMESG = re.compile(r"^\[\s*(?P<sec>\d+(?:\.\d+)?)\]\s?(?P<msg>.*)$")
_XID = re.compile(
    r"NVRM: Xid \(PCI:(?P<pci>[0-9A-Fa-f:.]+)\):\s*(?P<code>\d+)(?:,\s*(?P<rest>.*))?"
)
_SXID = re.compile(
    r"nvidia-nvswitch\d+: SXid \(PCI:(?P<pci>[0-9A-Fa-f:.]+)\):\s*(?P<code>\d+)"
    r"(?:,\s*(?P<rest>.*))?"
)
_SUBCODE = re.compile(r"\bsub-?code[\s=:]*\(?(?P<value>0x[0-9A-Fa-f]+|\d+)", re.IGNORECASE)
_PCI = re.compile(
    r"^(?:(?P<domain>[0-9a-f]+):)?(?P<bus>[0-9a-f]{1,2}):(?P<device>[0-9a-f]{1,2})(?:\.[0-7])?$"
)


@dataclass(frozen=True)
class KernelXid:
    pci: str  # normalised, see normalize_pci
    code: int
    subcode: int | None
    detail: str
    uptime_s: float | None  # seconds since boot, when the line says


@dataclass(frozen=True)
class KernelSxid:
    pci: str
    code: int
    detail: str
    uptime_s: float | None


def normalize_pci(bus_id: str) -> str | None:
    """`00000000:3B:00.0` (NVML) and `0000:3b:00` (kernel log) -> `0000:3b:00`."""
    match = _PCI.match(bus_id.strip().lower())
    if match is None:
        return None
    domain = int(match.group("domain") or "0", 16)
    return f"{domain:04x}:{int(match.group('bus'), 16):02x}:{int(match.group('device'), 16):02x}"


def parse_line(line: str) -> KernelXid | KernelSxid | None:
    """One /dev/kmsg record or dmesg line; None unless it is a well-formed Xid or SXid."""
    line = line.rstrip("\n")
    uptime: float | None = None
    if (kmsg := _KMSG.match(line)) is not None:
        uptime, message = int(kmsg.group("usec")) / 1e6, kmsg.group("msg")
    elif (dmesg := _DMESG.match(line)) is not None:
        uptime, message = float(dmesg.group("sec")), dmesg.group("msg")
    else:
        message = line
    if (xid := _XID.search(message)) is not None:
        pci = normalize_pci(xid.group("pci"))
        if pci is None:
            return None
        rest = (xid.group("rest") or "").strip()
        sub = _SUBCODE.search(rest)
        subcode = int(sub.group("value"), 0) if sub is not None else None
        return KernelXid(pci, int(xid.group("code")), subcode, rest[:TEXT_MAX], uptime)
    if (sxid := _SXID.search(message)) is not None:
        pci = normalize_pci(sxid.group("pci"))
        if pci is None:
            return None
        rest = (sxid.group("rest") or "").strip()
        return KernelSxid(pci, int(sxid.group("code")), rest[:TEXT_MAX], uptime)
    return None


def boot_time(stat: Path = Path("/proc/stat")) -> float:
    """When this host booted, by the wall clock: the same in every agent of this boot."""
    try:
        for line in stat.read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return time.time() - time.monotonic()


OnXid = Callable[[str, XidEvent], None]  # (normalised PCI bus id, event)
OnSxid = Callable[[SxidEvent], None]


def event(parsed: KernelXid | KernelSxid, booted: float) -> XidEvent | SxidEvent:
    at = booted + parsed.uptime_s if parsed.uptime_s is not None else time.time()
    if isinstance(parsed, KernelXid):
        return XidEvent(
            code=parsed.code, at=at, source="kmsg", subcode=parsed.subcode, detail=parsed.detail
        )
    return SxidEvent(code=parsed.code, at=at, detail=f"PCI:{parsed.pci} {parsed.detail}"[:TEXT_MAX])


class KernelLogReader:
    """Follows /dev/kmsg from the start of its ring in a daemon thread; runs `dmesg` every
    `dmesg_period_s` where /dev/kmsg cannot be read; neither: says so once and stops."""

    def __init__(
        self,
        on_xid: OnXid,
        on_sxid: OnSxid,
        *,
        kmsg: str = KMSG,
        dmesg: Sequence[str] = DMESG,
        dmesg_period_s: float = DMESG_PERIOD_S,
        booted: float | None = None,
    ) -> None:
        self.on_xid = on_xid
        self.on_sxid = on_sxid
        self.kmsg = kmsg
        self.dmesg = tuple(dmesg)
        self.dmesg_period_s = dmesg_period_s
        self.booted = boot_time() if booted is None else booted
        self.mode = "starting"  # then kmsg, dmesg or none
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: set[str] = set()  # dmesg lines already passed on

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kmsg", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * max(POLL_S, 1.0))

    def feed(self, line: str) -> None:
        parsed = parse_line(line)
        if parsed is None:
            return
        found = event(parsed, self.booted)
        if isinstance(found, XidEvent):
            self.on_xid(parsed.pci, found)
        else:
            self.on_sxid(found)

    def _run(self) -> None:
        try:
            fd = os.open(self.kmsg, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            kmsg_error: OSError | None = exc
        else:
            self.mode = "kmsg"
            try:
                self._follow(fd)
            finally:
                os.close(fd)
            return
        if self._dmesg_once():
            self.mode = "dmesg"
            log.info(
                "%s not readable (%s): reading the kernel log with dmesg", self.kmsg, kmsg_error
            )
            while not self._stop.wait(self.dmesg_period_s):
                self._dmesg_once()
            return
        self.mode = "none"
        log.warning(
            "cannot read the kernel log (%s: %s; dmesg failed too): Xids come from NVML only",
            self.kmsg,
            kmsg_error,
        )

    def _follow(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            try:
                record = os.read(fd, RECORD_MAX)
            except BlockingIOError:
                poller.poll(POLL_S * 1000)
                continue
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records overwritten before we read them: go on with the next
                log.warning("reading %s failed: %s; no more kernel Xids", self.kmsg, exc)
                return
            if not record:
                poller.poll(POLL_S * 1000)
                continue
            # A record is its message line, then dictionary lines (" KEY=value").
            self.feed(record.decode("utf-8", "replace").split("\n", 1)[0])

    def _dmesg_once(self) -> bool:
        try:
            done = subprocess.run(
                self.dmesg, capture_output=True, text=True, errors="replace", timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return False
        for line in done.stdout.splitlines():
            if line in self._seen or parse_line(line) is None:
                continue
            self._seen.add(line)
            self.feed(line)
        return True
