"""The fake health backend of a `--fake-gpus` node: healthy telemetry, and faults injected
by the server (tests, demos) shown as a real GPU would show them.

Faults, fake Xids and the fake boot id live in `fake-health.json` in the agent's state dir,
written atomically: an agent restart is not a reboot; only an injected `reboot` is.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from corral.wire.agent import Gpu
from corral.wire.health import MAX_EVENTS, GpuSignals, InjectFault, XidEvent

log = logging.getLogger("corral.agent.health")

STATE_FILE = "fake-health.json"
IDLE_POWER_W = 70.0
IDLE_TEMPERATURE_C = 34.0


class FakeGpuFaults(BaseModel):
    ecc_volatile_uncorrected: int = 0
    remap_failed: bool = False
    remap_pending: bool = False
    thermal: bool = False
    nvlink_down: bool = False
    vanished: bool = False
    xids: list[XidEvent] = Field(default_factory=list)


class FakeState(BaseModel):
    boot_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    gpus: dict[int, FakeGpuFaults] = Field(default_factory=dict)
    dropped: int = 0


class FakeHealth:
    """Thread-safe: faults arrive on the event loop while a check reads in a worker thread."""

    def __init__(self, inventory: list[Gpu], state_dir: Path, clock: Callable[[], float]) -> None:
        self.inventory = {g.index: g for g in inventory}
        self.path = state_dir / STATE_FILE
        self.clock = clock
        self._lock = threading.Lock()
        self._state = self._load()

    @property
    def boot_id(self) -> str:
        with self._lock:
            return self._state.boot_id

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._state.dropped

    def _load(self) -> FakeState:
        try:
            return FakeState.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ValidationError) as exc:
            log.warning(
                "%s unreadable (%s): fake GPUs start healthy, as after a reboot", self.path, exc
            )
        state = FakeState()
        self._save(state)
        return state

    def _save(self, state: FakeState) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(state.model_dump_json())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save the fake GPUs' faults to %s: %s", self.path, exc)

    def apply(self, fault: InjectFault) -> None:
        """Show the fault. Raises ValueError saying what is wrong with it."""
        if fault.gpu is not None and fault.gpu not in self.inventory:
            have = ", ".join(str(i) for i in sorted(self.inventory)) or "none"
            raise ValueError(f"gpu {fault.gpu} does not exist on this node (its GPUs: {have})")
        if fault.kind == "xid" and fault.xid is None:
            raise ValueError("an xid fault needs the Xid code (xid)")
        if fault.kind not in ("clear", "reboot") and fault.gpu is None:
            raise ValueError(f"a {fault.kind} fault needs the GPU's index (gpu)")
        with self._lock:
            state = self._state.model_copy(deep=True)
            self._change(state, fault)
            self._save(state)
            self._state = state

    def _change(self, state: FakeState, fault: InjectFault) -> None:
        if fault.kind == "reboot":
            state.gpus.clear()
            state.dropped = 0
            state.boot_id = str(uuid.uuid4())
            return
        if fault.kind == "clear":
            targets = list(state.gpus) if fault.gpu is None else [fault.gpu]
            for index in targets:
                if index in state.gpus:
                    # Xids stay: they happened in this boot, as on a real GPU.
                    state.gpus[index] = FakeGpuFaults(xids=state.gpus[index].xids)
            return
        assert fault.gpu is not None
        gpu = state.gpus.setdefault(fault.gpu, FakeGpuFaults())
        if fault.kind == "xid":
            assert fault.xid is not None
            gpu.xids.append(
                XidEvent(
                    code=fault.xid,
                    at=self.clock(),
                    source="fake",
                    subcode=fault.subcode,
                    detail=f"injected Xid {fault.xid}",
                )
            )
            if len(gpu.xids) > MAX_EVENTS:
                state.dropped += len(gpu.xids) - MAX_EVENTS
                del gpu.xids[:-MAX_EVENTS]
        elif fault.kind == "ecc_uncorrected":
            gpu.ecc_volatile_uncorrected += 1
        elif fault.kind == "remap_failed":
            gpu.remap_failed = True
        elif fault.kind == "remap_pending":
            gpu.remap_pending = True
        elif fault.kind == "thermal":
            gpu.thermal = True
        elif fault.kind == "nvlink_down":
            gpu.nvlink_down = True
        elif fault.kind == "vanish":
            gpu.vanished = True

    def read(self) -> tuple[list[GpuSignals], int]:
        """Signals per fake GPU, and how many are seen (the vanished ones are not)."""
        with self._lock:
            state = self._state
            signals = [self._signals(g, state.gpus.get(g.index)) for g in self.inventory.values()]
        return signals, sum(1 for s in signals if s.present)

    def _signals(self, gpu: Gpu, faults: FakeGpuFaults | None) -> GpuSignals:
        f = faults or FakeGpuFaults()
        xids = [x.model_copy() for x in f.xids]
        if f.vanished:
            return GpuSignals(index=gpu.index, uuid=gpu.uuid, present=False, xids=xids)
        return GpuSignals(
            index=gpu.index,
            uuid=gpu.uuid,
            pci_bus_id=f"00000000:{0x18 + gpu.index:02X}:00.0",
            model=gpu.model,
            memory_total_mb=gpu.memory_mb,
            memory_used_mb=0,
            utilization_pct=0.0,
            temperature_c=IDLE_TEMPERATURE_C + gpu.index % 4 + (50.0 if f.thermal else 0.0),
            power_w=IDLE_POWER_W,
            throttle=["hw_thermal"] if f.thermal else [],
            ecc_volatile_corrected=0,
            ecc_volatile_uncorrected=f.ecc_volatile_uncorrected,
            ecc_aggregate_corrected=0,
            ecc_aggregate_uncorrected=0,
            remapped_rows_pending=f.remap_pending,
            remapped_rows_failed=f.remap_failed,
            retired_pages=0,
            nvlink_down=[0] if f.nvlink_down else [],
            persistence_mode=True,
            xids=xids,
        )
