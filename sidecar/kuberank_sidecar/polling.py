"""Background threads that talk to NVML so that a scrape never does.

TelemetryPoller reads the owned devices every interval and posts samples on a SampleBoard;
XidWatcher waits on an NVML event set for XID critical errors. Both count NVML errors and
never let one escape: a lost GPU becomes an error sample, and is looked for again next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kuberank_sidecar.devices import (
    FATAL_ERROR_KINDS,
    DeviceTree,
    GpuIdentity,
    GpuReading,
    NvmlBackend,
    NvmlError,
    NvmlErrorKind,
)
from kuberank_sidecar.ownership import DeviceClaim, match_claim
from kuberank_sidecar.profiling import ProfilingSampler
from kuberank_sidecar.records import DeviceSample, ErrorCounts, OwnedDevice, SampleBoard, XidLedger
from kuberank_sidecar.resolving import NO_CLAIM, DeviceResolver

log = logging.getLogger(__name__)


class TelemetryPoller:
    """Polls NVML for the pod's devices at a fixed interval, in its own thread."""

    def __init__(
        self,
        backend: NvmlBackend,
        resolver: DeviceResolver,
        *,
        board: SampleBoard,
        errors: ErrorCounts,
        interval_s: float,
        resolve_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        after_poll: Callable[[], None] | None = None,
    ) -> None:
        self._backend = backend
        self._resolver = resolver
        self._after_poll = after_poll
        self._board = board
        self._errors = errors
        self._interval_s = interval_s
        self._resolve_interval_s = resolve_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._tree: DeviceTree | None = None
        self._owned: list[OwnedDevice] = []
        self._claim: DeviceClaim = NO_CLAIM
        self._resolved_at: float | None = None
        self._reported_unknown: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.profiling = ProfilingSampler(backend, errors=errors)

    @property
    def owned(self) -> list[OwnedDevice]:
        with self._lock:
            return list(self._owned)

    @property
    def claim(self) -> DeviceClaim:
        with self._lock:
            return self._claim

    @property
    def tree(self) -> DeviceTree | None:
        return self._tree

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _discover(self) -> DeviceTree | None:
        try:
            return self._backend.discover()
        except NvmlError as exc:
            self._errors.add("discover", exc.kind)
            if exc.kind is NvmlErrorKind.UNINITIALIZED:
                try:
                    self._backend.open()
                except NvmlError as reopen:
                    self._errors.add("init", reopen.kind)
            return None

    def refresh_claim(self, *, force: bool = False) -> None:
        """Re-read which devices this pod owns (every resolve interval, or while none)."""
        now = self._clock()
        due = (
            force
            or self._resolved_at is None
            or not self._owned
            or now - self._resolved_at >= self._resolve_interval_s
        )
        if not due or self._tree is None:
            return
        claim = self._resolver.resolve(self._tree)
        owned, unknown = match_claim(claim, self._tree)
        if tuple(unknown) != self._reported_unknown and unknown:
            log.warning(
                "devices %s from %s are not on this node; they are not exported",
                ", ".join(unknown),
                claim.source,
            )
        self._reported_unknown = tuple(unknown)
        with self._lock:
            self._claim = claim
            self._owned = owned
        self._resolved_at = now
        self._board.replace_devices(owned)
        self.profiling.keep_only(d.uuid for d in owned)

    def poll_once(self) -> None:
        started = self._clock()
        if self._tree is None:
            self._tree = self._discover()
            if self._tree is None:
                self._mark_all(NvmlErrorKind.GPU_LOST, started)
                self._board.finish_poll(
                    duration_s=self._clock() - started, finished_at=self._clock()
                )
                return
            self._resolved_at = None
        self.refresh_claim()
        parents: dict[str, GpuReading | NvmlError] = {}
        for device in self.owned:
            self._board.put(self._read(device, parents))
        self._board.finish_poll(duration_s=self._clock() - started, finished_at=self._clock())
        if self._after_poll is not None:
            self._after_poll()

    def _read_parent(
        self, gpu: GpuIdentity, parents: dict[str, GpuReading | NvmlError]
    ) -> GpuReading:
        cached = parents.get(gpu.uuid)
        if cached is None:
            try:
                cached = self._backend.read_gpu(gpu)
                for failure in cached.field_errors:
                    self._errors.add(failure.field, failure.kind)
            except NvmlError as exc:
                self._errors.add(exc.operation, exc.kind)
                cached = exc
            parents[gpu.uuid] = cached
        if isinstance(cached, NvmlError):
            raise cached
        return cached

    def _read(
        self, device: OwnedDevice, parents: dict[str, GpuReading | NvmlError]
    ) -> DeviceSample:
        try:
            gpu_reading = self._read_parent(device.gpu, parents)
            mig_reading = None
            if device.mig is not None:
                try:
                    mig_reading = self._backend.read_mig(device.mig)
                except NvmlError as exc:
                    self._errors.add(exc.operation, exc.kind)
                    raise
                for failure in mig_reading.field_errors:
                    self._errors.add(failure.field, failure.kind)
        except NvmlError as exc:
            if exc.kind in FATAL_ERROR_KINDS:
                self._tree = None  # Find the GPU again next poll (it may come back after a reset).
                self.profiling.release_all()
            else:
                self.profiling.forget(device.uuid)
            return DeviceSample(device=device, taken_at=self._clock(), error=exc.kind)
        return DeviceSample(
            device=device,
            taken_at=self._clock(),
            gpu=gpu_reading,
            mig=mig_reading,
            profiling=self.profiling.advance(device),
        )

    def _mark_all(self, kind: NvmlErrorKind, now: float) -> None:
        for device in self.owned:
            self._board.put(DeviceSample(device=device, taken_at=now, error=kind))

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                self.poll_once()
            except Exception:
                # A bug here must not stop telemetry for good: log it and poll again.
                log.exception("telemetry poll failed")
            self._stop.wait(max(0.0, self._interval_s - (self._clock() - started)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nvml-poller", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if not self.alive():
            self.profiling.release_all()  # A poll still stuck in the driver keeps its samples.


class XidWatcher:
    """Waits for XID critical errors on the owned GPUs and records them per owned device."""

    def __init__(
        self,
        backend: NvmlBackend,
        poller: TelemetryPoller,
        *,
        ledger: XidLedger,
        errors: ErrorCounts,
        wait_s: float = 1.0,
        retry_s: float = 10.0,
    ) -> None:
        self._backend = backend
        self._poller = poller
        self._ledger = ledger
        self._errors = errors
        self._wait_s = wait_s
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch_once(self) -> None:
        owned = self._poller.owned
        if not owned:
            self._stop.wait(self._wait_s)
            return
        gpus = list({d.gpu.uuid: d.gpu for d in owned}.values())
        try:
            events = self._backend.wait_xid_events(gpus, timeout_s=self._wait_s)
        except NvmlError as exc:
            self._errors.add("xid_wait", exc.kind)
            if exc.kind is NvmlErrorKind.NOT_SUPPORTED:
                log.warning(
                    "XID events are not supported on this GPU; DCGM_FI_DEV_XID_ERRORS stays 0"
                )
                self._stop.wait(3600.0)
            else:
                self._stop.wait(self._retry_s)
            return
        for event in events:
            for device in owned:
                if device.gpu.uuid != event.gpu_uuid:
                    continue
                # On MIG, an event of another GPU instance belongs to another tenant.
                if (
                    device.mig is not None
                    and event.gpu_instance_id is not None
                    and event.gpu_instance_id != device.mig.gpu_instance_id
                ):
                    continue
                log.warning("XID %d on %s", event.xid, device.uuid)
                self._ledger.record(device.uuid, event.xid)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.watch_once()
            except Exception:
                log.exception("XID watch failed")
                self._stop.wait(self._retry_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="xid-watcher", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
