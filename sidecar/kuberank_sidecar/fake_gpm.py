"""The fake card's GPM: activity counters that integrate the state file's load over time, so a
metric is the average between two samples, as on a real card (the values read at a sample are
taken to have held since the device's previous sample).

The load knob (0..1) is `load` in a GPU's or MIG instance's state entry; without it a GPU's
load is its `utilization` / 100. Each metric follows it and may be set outright:
`gr_engine_active`, `sm_active`, `sm_occupancy`, `tensor_active`, `dram_active` (ratios) and
`pcie_tx_bytes_per_s`, `pcie_rx_bytes_per_s`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kuberank_sidecar.devices import NvmlError, NvmlErrorKind, ProfilingReading, ProfilingSample
from kuberank_sidecar.fake_profiles import FakeGpuSpec

# ProfilingReading field: (value when idle, value at load 1.0); PCIe keeps a trickle when idle.
FULL_LOAD: dict[str, tuple[float, float]] = {
    "gr_engine_active": (0.0, 1.0),
    "sm_active": (0.0, 0.92),
    "sm_occupancy": (0.0, 0.45),
    "tensor_active": (0.0, 0.65),
    "dram_active": (0.0, 0.35),
    "pcie_tx_bytes_per_s": (1.5e6, 6.0e7),
    "pcie_rx_bytes_per_s": (2.5e6, 4.0e8),
}


def rates(load: float, overrides: Mapping[str, Any]) -> dict[str, float]:
    """Each metric's value at this load, or as the state entry sets it."""
    load = min(max(load, 0.0), 1.0)
    return {
        name: float(overrides.get(name, idle + (full - idle) * load))
        for name, (idle, full) in FULL_LOAD.items()
    }


def device_rates(
    spec: FakeGpuSpec, entry: Mapping[str, Any], *, slot: int | None
) -> dict[str, float]:
    """A GPU's (slot None) or MIG slot's metrics: its `load`, else the GPU's utilization / 100
    or, for a slot, a load that grows with the slot (0.1, 0.2, …)."""
    if slot is None:
        default = float(entry.get("utilization", spec.utilization)) / 100.0
    else:
        default = 0.1 * (slot + 1)
    return rates(float(entry.get("load", default)), entry)


@dataclass(frozen=True)
class _Handle:
    """What a fake sample holds: its id (to track frees), its device and the totals then."""

    sample_id: int
    key: str
    sums: tuple[float, ...]


@dataclass(frozen=True)
class _Totals:
    """A device's activity integrated since the fake was opened: metric × seconds."""

    at: float
    sums: tuple[float, ...]


class FakeGpm:
    """Integrated activity per device, and the samples handed out and not yet freed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, _Totals] = {}
        self.outstanding: set[int] = set()
        self._next_id = 0

    def sample(self, key: str, current: dict[str, float], *, now: float) -> ProfilingSample:
        """Integrate `current` over the time since the device's previous sample."""
        with self._lock:
            totals = self._totals.get(key, _Totals(at=now, sums=(0.0,) * len(FULL_LOAD)))
            elapsed = max(0.0, now - totals.at)
            sums = tuple(
                s + current[name] * elapsed for s, name in zip(totals.sums, FULL_LOAD, strict=True)
            )
            self._totals[key] = _Totals(at=now, sums=sums)
            self._next_id += 1
            self.outstanding.add(self._next_id)
            return ProfilingSample(taken_at=now, handle=_Handle(self._next_id, key, sums))

    def between(self, earlier: ProfilingSample, later: ProfilingSample) -> ProfilingReading:
        a, b = _handle(earlier), _handle(later)
        interval = later.taken_at - earlier.taken_at
        if a.key != b.key or interval <= 0:
            # NVML refuses samples of two devices, or out of order, the same way.
            raise NvmlError(NvmlErrorKind.INVALID_ARGUMENT, operation="gpm_metrics")
        pairs = zip(FULL_LOAD, a.sums, b.sums, strict=True)
        means = {name: (after - before) / interval for name, before, after in pairs}
        return ProfilingReading.of(means, interval_s=interval)

    def free(self, sample: ProfilingSample) -> None:
        with self._lock:
            self.outstanding.discard(_handle(sample).sample_id)


def _handle(sample: ProfilingSample) -> _Handle:
    if not isinstance(sample.handle, _Handle):
        raise NvmlError(NvmlErrorKind.INVALID_ARGUMENT, operation="gpm_metrics")
    return sample.handle
