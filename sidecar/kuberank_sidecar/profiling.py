"""GPM profiling metrics between consecutive polls, for the poller thread.

A GPM metric is an average between two samples: each poll takes one sample per owned device,
turns it and the previous poll's sample into a ProfilingReading, frees the previous one and
keeps the new one. The first poll of a device therefore has no reading. GPM support is asked
once per GPU; a GPU without it is logged once and its profiling metrics stay absent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from kuberank_sidecar.devices import (
    NvmlBackend,
    NvmlError,
    NvmlErrorKind,
    ProfilingReading,
    ProfilingSample,
)
from kuberank_sidecar.records import ErrorCounts, OwnedDevice

log = logging.getLogger(__name__)


class ProfilingSampler:
    """The latest GPM sample of each owned device, held until the next poll replaces it."""

    def __init__(self, backend: NvmlBackend, *, errors: ErrorCounts) -> None:
        self._backend = backend
        self._errors = errors
        # Taken by the poller for a whole advance, and by release_all at stop.
        self._lock = threading.Lock()
        self._previous: dict[str, ProfilingSample] = {}
        # GPU (or MIG device) UUID -> whether it has GPM; asked once, logged once when not.
        self._supported: dict[str, bool] = {}

    @property
    def held(self) -> int:
        """Samples held now (one per device with a reading in progress)."""
        with self._lock:
            return len(self._previous)

    def advance(self, device: OwnedDevice) -> ProfilingReading | None:
        """Sample the device; the reading since its previous sample, or None (first sample,
        no GPM, or a failed call, which is counted and starts the device over)."""
        with self._lock:
            if not self._has_gpm(device):
                return None
            instance = device.mig.gpu_instance_id if device.mig is not None else None
            try:
                sample = self._backend.take_profiling_sample(device.gpu, gpu_instance_id=instance)
            except NvmlError as exc:
                self._errors.add("gpm_sample", exc.kind)
                self._drop(device.uuid)
                if exc.kind is NvmlErrorKind.NOT_SUPPORTED:
                    self._mark_unsupported(device, "GPM sampling is not supported")
                return None
            previous = self._previous.pop(device.uuid, None)
            self._previous[device.uuid] = sample
            if previous is None:
                return None
            try:
                if sample.taken_at <= previous.taken_at:
                    return None
                reading = self._backend.profiling_between(previous, sample)
            except NvmlError as exc:
                self._errors.add("gpm_metrics", exc.kind)
                return None
            finally:
                self._backend.free_profiling_sample(previous)
        for failure in reading.field_errors:
            self._errors.add(failure.field, failure.kind)
        return reading

    def _has_gpm(self, device: OwnedDevice) -> bool:
        known = self._supported.get(device.uuid)
        if known is None:
            known = self._supported.get(device.gpu.uuid)
        if known is not None:
            return known
        try:
            known = self._backend.profiling_supported(device.gpu)
        except NvmlError as exc:
            self._errors.add("gpm_support", exc.kind)
            return False  # Asked again next poll.
        self._supported[device.gpu.uuid] = known
        if not known:
            self._mark_unsupported(device, "the GPU has no NVML GPM (Hopper or newer has it)")
        return known

    def _mark_unsupported(self, device: OwnedDevice, why: str) -> None:
        self._supported[device.uuid] = False
        log.warning(
            "%s on %s (%s): DCGM_FI_PROF_* profiling metrics are not exported for it",
            why,
            device.uuid,
            device.gpu.model_name,
        )

    def _drop(self, uuid: str) -> None:
        sample = self._previous.pop(uuid, None)
        if sample is not None:
            self._backend.free_profiling_sample(sample)

    def forget(self, uuid: str) -> None:
        """Free a device's sample: its next reading starts over (after an error, say)."""
        with self._lock:
            self._drop(uuid)

    def keep_only(self, uuids: Iterable[str]) -> None:
        """Free the samples of devices no longer owned."""
        keep = set(uuids)
        with self._lock:
            for uuid in [u for u in self._previous if u not in keep]:
                self._drop(uuid)

    def release_all(self) -> None:
        """Free every sample (before NVML shuts down or re-initialises)."""
        with self._lock:
            for uuid in list(self._previous):
                self._drop(uuid)
