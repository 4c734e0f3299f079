"""What the background threads have observed, shared with the scrape path.

The pollers write, the HTTP handlers read; each holder takes a lock for a dictionary copy only,
so a scrape never waits on NVML.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from kuberank_sidecar.devices import (
    GpuIdentity,
    GpuReading,
    MigIdentity,
    MigReading,
    NvmlErrorKind,
    ProfilingReading,
)


@dataclass(frozen=True)
class OwnedDevice:
    """A device this pod was given: a whole GPU, or a MIG device on a parent GPU."""

    gpu: GpuIdentity
    mig: MigIdentity | None = None
    container: str = ""

    @property
    def uuid(self) -> str:
        return self.mig.uuid if self.mig is not None else self.gpu.uuid


@dataclass(frozen=True)
class DeviceSample:
    """The latest poll of one owned device. Readings are None when it could not be read."""

    device: OwnedDevice
    taken_at: float
    gpu: GpuReading | None = None
    mig: MigReading | None = None
    error: NvmlErrorKind | None = None
    # GPM metrics since the previous poll; None on the first poll or where there is no GPM.
    profiling: ProfilingReading | None = None


class ErrorCounts:
    """NVML errors by (operation, error kind), for kuberank_gpu_nvml_errors_total."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, operation: str, kind: NvmlErrorKind) -> None:
        with self._lock:
            self._counts[(operation, kind.value)] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


@dataclass(frozen=True)
class XidTally:
    """XIDs seen on one owned device since the sidecar started."""

    last_xid: int
    counts: dict[int, int]


class XidLedger:
    """XID critical events per owned device UUID."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        self._counts: dict[str, Counter[int]] = {}

    def record(self, device_uuid: str, xid: int) -> None:
        with self._lock:
            self._last[device_uuid] = xid
            self._counts.setdefault(device_uuid, Counter())[xid] += 1

    def snapshot(self) -> dict[str, XidTally]:
        with self._lock:
            return {
                uuid: XidTally(last_xid=self._last[uuid], counts=dict(counts))
                for uuid, counts in self._counts.items()
            }


class SampleBoard:
    """The latest DeviceSample per owned device, and the last poll's duration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, DeviceSample] = {}
        self.last_poll_duration_s: float | None = None
        self.last_poll_finished_at: float | None = None

    def replace_devices(self, devices: list[OwnedDevice]) -> None:
        """Forget samples of devices no longer owned (the pod's claim changed)."""
        keep = {d.uuid for d in devices}
        with self._lock:
            self._samples = {k: v for k, v in self._samples.items() if k in keep}

    def put(self, sample: DeviceSample) -> None:
        with self._lock:
            self._samples[sample.device.uuid] = sample

    def finish_poll(self, *, duration_s: float, finished_at: float) -> None:
        with self._lock:
            self.last_poll_duration_s = duration_s
            self.last_poll_finished_at = finished_at

    def samples(self) -> list[DeviceSample]:
        with self._lock:
            return list(self._samples.values())
