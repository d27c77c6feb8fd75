"""Saved runs: every `corral sim` keeps its reports (figures and the series `--plot` draws)
as one JSON file, so the console's Simulation page can show the last runs.

    <home>/sim-runs/20261203T205539.123Z-corral-fifo-s0.json      (home: $CORRAL_HOME, else
    <home>/sim-runs/20261203T211002.480Z-corral-s7.json             ~/.corral: the CLI's and
                                                                    the server's, as `corral up`)

One file per invocation: a comparison (`-p corral -p fifo`, `--fixed-pools`) is one run
whose reports are drawn over each other, as `--plot` would. Files are written atomically
(a hidden temporary file, then a rename), only the newest KEEP are kept, and every series
is at most MAX_POINTS samples, so a run of 149 simulated days is still a small file.

Reading trusts nothing: the page lists only names matching RUN_NAME found in the directory
(a name from a URL is looked up among them, never joined to a path), and a file that is
not a saved run (corrupt, foreign, another version, too large) is skipped with a note.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import threading
from array import array
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from corral.sim.metrics import Series
from corral.sim.options import SimOptions
from corral.sim.report import SimReport

RUNS_DIR = "sim-runs"
KEEP = 20  # runs kept; older ones are deleted when a new one is saved
MAX_POINTS = 2000  # samples per series in a saved run (a plot is ~2,000 px wide at most)
MAX_FILE_BYTES = (
    16 * 1024 * 1024
)  # a saved run is ~100 KB per report; anything far larger is not one
MAX_REPORTS = 16
KIND = "corral.sim-run"
VERSION = 1
COLUMNS = ("t", "used", "up", "queued", "arrived", "fragmented")
RUN_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-[a-z0-9-]{1,100}$")  # 80 + a "-N" suffix


class BadRun(ValueError):
    """A file in the runs directory that is not a saved run this corral can read."""


@dataclass(frozen=True)
class RunInputs:
    """What the run was asked (paths as the CLI resolved them on its machine)."""

    format: str
    trace: str | None = None
    gpus: int | None = None
    cluster: str | None = None
    pools: str | None = None
    failures: str | None = None
    max_jobs: int | None = None
    fill: float | None = None
    seed: int = 0

    @classmethod
    def of(cls, options: SimOptions) -> RunInputs:
        def path(p: Path | None) -> str | None:
            return None if p is None else str(p.expanduser().resolve())

        return cls(
            format=options.format,
            trace=path(options.trace),
            gpus=options.gpus,
            cluster=path(options.cluster),
            pools=path(options.pools),
            failures=options.failures,
            max_jobs=options.max_jobs,
            fill=options.fill,
            seed=options.seed,
        )


@dataclass(frozen=True)
class SavedRun:
    """One saved invocation: its reports, each with its (downsampled) series."""

    id: str
    saved_at: float  # unix seconds, when the CLI saved it
    inputs: RunInputs
    reports: tuple[SimReport, ...]
    points: tuple[int, ...]  # samples each report's series had before downsampling


@dataclass(frozen=True)
class Listing:
    runs: tuple[SavedRun, ...]  # newest first
    skipped: tuple[str, ...]  # "NAME: why", for files that are not readable runs


def runs_dir(home: Path) -> Path:
    return home / RUNS_DIR


# --- writing -----------------------------------------------------------------------------


def downsample(series: Series, max_points: int = MAX_POINTS) -> Series:
    """At most `max_points` samples of a step series: equal slices of time, each the
    time-weighted mean of every column over its slice (so time averages, and with them the
    report's utilization, survive), then the last sample as it was."""
    n = len(series)
    if n <= max_points:
        return _copy(series)
    t0, t1 = series.t[0], series.t[-1]
    buckets = max_points - 1
    width = (t1 - t0) / buckets
    names = COLUMNS[1:]
    columns = [getattr(series, c) for c in names]
    sums = [[0.0] * buckets for _ in names]
    for k in range(n - 1):
        lo, hi = series.t[k], series.t[k + 1]
        b = min(int((lo - t0) / width), buckets - 1)
        while lo < hi:
            edge = hi if b == buckets - 1 else min(hi, t0 + (b + 1) * width)
            span = edge - lo
            if span > 0:
                for acc, col in zip(sums, columns, strict=True):
                    acc[b] += col[k] * span
            lo = edge
            b += 1
    out = Series()
    out.t = array("d", (t0 + b * width for b in range(buckets)))
    out.t.append(t1)
    for name, acc, col in zip(names, sums, columns, strict=True):
        values = array("d", (s / width for s in acc))
        values.append(col[-1])
        setattr(out, name, values)
    return out


def _copy(series: Series) -> Series:
    out = Series()
    for c in COLUMNS:
        setattr(out, c, array("d", getattr(series, c)))
    return out


def run_name(saved_at: float, reports: list[SimReport]) -> str:
    """`20261203T205539.123Z-corral-fifo-s0`: sorts by time; policies and seed for a person."""
    when = dt.datetime.fromtimestamp(saved_at, dt.UTC)
    stamp = when.strftime("%Y%m%dT%H%M%S") + f".{when.microsecond // 1000:03d}Z"
    policies: list[str] = []
    for r in reports:
        slug = re.sub(r"[^a-z0-9]+", "-", r.policy.lower()).strip("-") or "run"
        if slug not in policies:
            policies.append(slug)
    seed = reports[0].seed if reports else 0
    tail = f"-s{seed}" if seed >= 0 else f"-sm{-seed}"
    return f"{stamp}-{'-'.join(policies)[: 80 - len(tail)].strip('-')}{tail}"


def encode(inputs: RunInputs, reports: list[SimReport], saved_at: float) -> dict[str, Any]:
    return {
        "kind": KIND,
        "version": VERSION,
        "saved_at": saved_at,
        "inputs": {f.name: getattr(inputs, f.name) for f in fields(RunInputs)},
        "reports": [_encode_report(r) for r in reports],
    }


def _encode_report(report: SimReport) -> dict[str, Any]:
    out: dict[str, Any] = {"figures": report.to_dict(), "series": None}
    if report.series is not None:
        thin = downsample(report.series)
        columns: dict[str, Any] = {c: [round(v, 3) for v in getattr(thin, c)] for c in COLUMNS}
        out["series"] = {"points": len(report.series), **columns}
    return out


def save_run(
    home: Path, inputs: RunInputs, reports: list[SimReport], saved_at: float, keep: int = KEEP
) -> Path:
    """Write the run under `home`/sim-runs atomically, then delete all but the newest
    `keep` runs. The directory is private to its user, as everything under the home."""
    if not reports:
        raise ValueError("a saved run has at least one report")
    folder = runs_dir(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.mkdir(exist_ok=True, mode=0o700)
    body = json.dumps(encode(inputs, reports, saved_at), separators=(",", ":"), allow_nan=False)
    base = run_name(saved_at, reports)
    name, n = base, 1
    while (folder / f"{name}.json").exists():  # two runs in one millisecond
        n += 1
        name = f"{base}-{n}"
    target = folder / f"{name}.json"
    temporary = folder / f".{name}.{os.getpid()}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(body)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    prune(folder, keep)
    return target


def prune(folder: Path, keep: int = KEEP) -> list[str]:
    """Delete saved runs beyond the newest `keep` (only files named as runs); their names."""
    names = run_names(folder)  # newest first
    gone = []
    for name in names[keep:]:
        with contextlib.suppress(FileNotFoundError):
            (folder / f"{name}.json").unlink()
            gone.append(name)
    return gone


# --- reading -----------------------------------------------------------------------------


def run_names(folder: Path) -> list[str]:
    """Names of the saved runs in `folder`, newest first (the name starts with its time)."""
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = [e[: -len(".json")] for e in entries if e.endswith(".json")]
    return sorted((n for n in names if RUN_NAME.match(n)), reverse=True)


def list_runs(home: Path, cache: RunCache | None = None) -> Listing:
    """The saved runs, newest first, and a note for each file that is not a readable run."""
    folder = runs_dir(home)
    runs: list[SavedRun] = []
    skipped: list[str] = []
    for name in run_names(folder):
        try:
            runs.append(cache.read(folder, name) if cache else read_run(folder, name))
        except BadRun as exc:
            skipped.append(f"{name}.json: {exc}")
    return Listing(tuple(runs), tuple(skipped))


def find_run(home: Path, run_id: str, cache: RunCache | None = None) -> SavedRun | None:
    """The run named `run_id` if the directory lists one (BadRun if it is unreadable).
    The name is compared with the listing, never used to build a path on its own."""
    folder = runs_dir(home)
    for name in run_names(folder):
        if name == run_id:
            return cache.read(folder, name) if cache else read_run(folder, name)
    return None


class RunCache:
    """Runs already read, by path, kept while the file is unchanged (same size and
    modification time: a run is written once, by a rename). A page reads ~20 files of up
    to a few hundred KB each; with this, only new ones."""

    def __init__(self, size: int = 2 * KEEP) -> None:
        self.size = size
        self._runs: dict[Path, tuple[tuple[int, int], SavedRun | BadRun]] = {}
        # The console's routes run in worker threads, several at once.
        self._lock = threading.Lock()

    def read(self, folder: Path, name: str) -> SavedRun:
        with self._lock:
            return self._read(folder, name)

    def _read(self, folder: Path, name: str) -> SavedRun:
        path = folder / f"{name}.json"
        try:
            info = path.stat()
        except OSError as exc:
            raise BadRun(f"cannot read it ({exc.strerror or exc})") from None
        key = (info.st_mtime_ns, info.st_size)
        kept = self._runs.get(path)
        if kept is None or kept[0] != key:
            try:
                found: SavedRun | BadRun = read_run(folder, name)
            except BadRun as exc:
                found = exc
            if len(self._runs) >= self.size:
                self._runs.pop(next(iter(self._runs)))  # the oldest entry
            kept = self._runs[path] = (key, found)
        if isinstance(kept[1], BadRun):
            raise BadRun(str(kept[1]))  # a fresh exception per raise: threads share none
        return kept[1]


def read_run(folder: Path, name: str) -> SavedRun:
    path = folder / f"{name}.json"
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadRun(f"cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise BadRun(f"over {MAX_FILE_BYTES // (1024 * 1024)} MiB: not a saved run")
    try:
        doc = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRun(f"not JSON ({exc})") from None
    return decode(name, doc)


def _no_constant(token: str) -> float:
    raise ValueError(f"{token} is not a number")


def decode(name: str, doc: Any) -> SavedRun:
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise BadRun("not a saved simulation run")
    if doc.get("version") != VERSION:
        raise BadRun(f"saved in format {doc.get('version')!r}; this corral reads {VERSION}")
    saved_at = doc.get("saved_at")
    if not isinstance(saved_at, int | float) or not _number(saved_at):
        raise BadRun("saved_at: expected a time")
    inputs = _inputs(doc.get("inputs"))
    entries = doc.get("reports")
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_REPORTS:
        raise BadRun(f"reports: expected 1 to {MAX_REPORTS}")
    reports: list[SimReport] = []
    points: list[int] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BadRun(f"reports[{i}]: expected an object")
        series, n = _series(entry.get("series"), f"reports[{i}].series")
        reports.append(report_from_dict(entry.get("figures"), series, f"reports[{i}].figures"))
        points.append(n)
    return SavedRun(name, float(saved_at), inputs, tuple(reports), tuple(points))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _inputs(raw: Any) -> RunInputs:
    if not isinstance(raw, dict) or not isinstance(raw.get("format"), str):
        raise BadRun("inputs: expected an object with a format")
    values: dict[str, Any] = {}
    for f in fields(RunInputs):
        if f.name not in raw:
            continue
        value = raw[f.name]
        ok = value is None or {
            "str": isinstance(value, str),
            "str | None": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "int | None": isinstance(value, int) and not isinstance(value, bool),
            "float | None": _number(value),
        }.get(str(f.type), False)
        if not ok or (value is None and str(f.type) in ("str", "int")):
            raise BadRun(f"inputs.{f.name}: expected {f.type}")
        values[f.name] = value
    return RunInputs(**values)


def _series(raw: Any, where: str) -> tuple[Series | None, int]:
    if raw is None:
        return None, 0
    if not isinstance(raw, dict):
        raise BadRun(f"{where}: expected an object")
    out = Series()
    length = None
    for c in COLUMNS:
        values = raw.get(c)
        if not isinstance(values, list) or len(values) > 2 * MAX_POINTS:
            raise BadRun(f"{where}.{c}: expected a list of at most {2 * MAX_POINTS} numbers")
        if length is not None and len(values) != length:
            raise BadRun(f"{where}: columns of different lengths")
        length = len(values)
        try:
            column = array("d", values)  # in C: a string, a list or null is refused here
        except TypeError:
            raise BadRun(f"{where}.{c}: expected numbers") from None
        if not all(map(math.isfinite, column)):  # 1e999 parses as infinity
            raise BadRun(f"{where}.{c}: expected finite numbers")
        setattr(out, c, column)
    if any(b < a for a, b in zip(out.t, out.t[1:], strict=False)):
        raise BadRun(f"{where}.t: expected times in order")
    points = raw.get("points", length)
    return out, points if isinstance(points, int) and not isinstance(points, bool) else len(out)


def report_from_dict(raw: Any, series: Series | None, where: str = "figures") -> SimReport:
    """A SimReport from its to_dict(): fields this corral does not know are ignored, a
    missing one takes its default (one without a default makes the file unreadable)."""
    if not isinstance(raw, dict):
        raise BadRun(f"{where}: expected an object")
    values: dict[str, Any] = {}
    for f in fields(SimReport):
        if f.name == "series" or f.name not in raw:
            continue
        convert = _CONVERT.get(str(f.type))
        try:
            if convert is None:
                raise ValueError("a kind of figure this corral cannot read")
            values[f.name] = convert(raw[f.name])
        except (TypeError, ValueError) as exc:
            raise BadRun(f"{where}.{f.name}: {exc}") from None
    try:
        return SimReport(**values, series=series)
    except TypeError as exc:  # a required figure is missing
        raise BadRun(f"{where}: {exc}") from None


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("expected a whole number")
    return v


def _float(v: Any) -> float:
    if not _number(v):
        raise ValueError("expected a number")
    return float(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("expected text")
    return v


def _optional_float(v: Any) -> float | None:
    return None if v is None else _float(v)


def _counts(v: Any) -> dict[str, int]:
    if not isinstance(v, dict):
        raise ValueError("expected an object")
    return {_str(k): _int(n) for k, n in v.items()}


def _amounts(v: Any) -> dict[str, float]:
    if not isinstance(v, dict):
        raise ValueError("expected an object")
    return {_str(k): _float(n) for k, n in v.items()}


def _notes(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise ValueError("expected a list")
    return tuple(_str(n) for n in v)


def _curve(v: Any) -> tuple[tuple[float, float, float], ...]:
    if not isinstance(v, list) or not all(isinstance(p, list) and len(p) == 3 for p in v):
        raise ValueError("expected a list of [arrived, allocated, fragmented]")
    return tuple((_float(p[0]), _float(p[1]), _float(p[2])) for p in v)


# SimReport's field types (as written in report.py) and how each is read back.
_CONVERT: dict[str, Any] = {
    "int": _int,
    "float": _float,
    "str": _str,
    "float | None": _optional_float,
    "dict[str, int]": _counts,
    "dict[str, float]": _amounts,
    "tuple[str, ...]": _notes,
    "tuple[tuple[float, float, float], ...]": _curve,
}
