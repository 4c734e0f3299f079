"""The real NVML backend (nvidia-ml-py); with nvml_profiling (GPM), the only pynvml code."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pynvml

from kuberank_sidecar import nvml_profiling
from kuberank_sidecar.devices import (
    DeviceTree,
    FieldError,
    GpuIdentity,
    GpuReading,
    MemoryReading,
    MigIdentity,
    MigReading,
    NvmlError,
    NvmlErrorKind,
    ProfilingReading,
    ProfilingSample,
    TuningLimits,
    XidEvent,
    mig_profile_name,
)

T = TypeVar("T")

_MIB = 1024 * 1024
# NVML reports "no GPU instance" in event data with this value.
_NO_INSTANCE = 0xFFFFFFFF

_ERROR_KINDS = {
    pynvml.NVML_ERROR_GPU_IS_LOST: NvmlErrorKind.GPU_LOST,
    pynvml.NVML_ERROR_NO_PERMISSION: NvmlErrorKind.NO_PERMISSION,
    pynvml.NVML_ERROR_NOT_SUPPORTED: NvmlErrorKind.NOT_SUPPORTED,
    pynvml.NVML_ERROR_TIMEOUT: NvmlErrorKind.TIMEOUT,
    pynvml.NVML_ERROR_NOT_FOUND: NvmlErrorKind.NOT_FOUND,
    pynvml.NVML_ERROR_INVALID_ARGUMENT: NvmlErrorKind.INVALID_ARGUMENT,
    pynvml.NVML_ERROR_UNINITIALIZED: NvmlErrorKind.UNINITIALIZED,
}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _translate(exc: pynvml.NVMLError, operation: str) -> NvmlError:
    kind = _ERROR_KINDS.get(getattr(exc, "value", None), NvmlErrorKind.OTHER)
    return NvmlError(kind, operation=operation, detail=str(exc))


def _call(operation: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        raise _translate(exc, operation) from exc


class _FieldReader:
    """Reads fields one by one: an unsupported field is recorded, a lost GPU raises."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def read(self, name: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except pynvml.NVMLError as exc:
            error = _translate(exc, name)
            if error.kind in (NvmlErrorKind.GPU_LOST, NvmlErrorKind.UNINITIALIZED):
                raise error from exc
            self.errors.append(FieldError(field=name, kind=error.kind))
            return None


def _memory(handle: Any) -> MemoryReading:
    try:
        info = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
        reserved = float(info.reserved)
    except pynvml.NVMLError as exc:
        if getattr(exc, "value", None) != pynvml.NVML_ERROR_NOT_SUPPORTED:
            raise
        # Older drivers: v1 counts reserved memory as used.
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        reserved = 0.0
    return MemoryReading(
        total_mib=float(info.total) / _MIB,
        used_mib=float(info.used) / _MIB,
        free_mib=float(info.free) / _MIB,
        reserved_mib=reserved / _MIB,
    )


def _memory_temp(handle: Any) -> float:
    (value,) = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_MEMORY_TEMP])
    if value.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(value.nvmlReturn)
    return float(value.value.uiVal)


def _clock_event_reasons(handle: Any) -> int:
    try:
        return int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
    except pynvml.NVMLError_FunctionNotFound:
        return int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))


class RealNvml:
    """NvmlBackend over the driver's libnvidia-ml.so."""

    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._event_set: Any = None
        self._event_uuids: frozenset[str] = frozenset()

    def open(self) -> None:
        _call("nvmlInit", pynvml.nvmlInit)

    def close(self) -> None:
        try:
            if self._event_set is not None:
                pynvml.nvmlEventSetFree(self._event_set)
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
        self._event_set = None
        self._handles.clear()

    def _handle(self, uuid: str) -> Any:
        with self._lock:
            handle = self._handles.get(uuid)
        if handle is None:
            handle = _call("nvmlDeviceGetHandleByUUID", pynvml.nvmlDeviceGetHandleByUUID, uuid)
            with self._lock:
                self._handles[uuid] = handle
        return handle

    def discover(self) -> DeviceTree:
        with self._lock:
            self._handles.clear()
        gpus: list[GpuIdentity] = []
        migs: list[MigIdentity] = []
        count = _call("nvmlDeviceGetCount", pynvml.nvmlDeviceGetCount)
        for index in range(count):
            handle = _call("nvmlDeviceGetHandleByIndex", pynvml.nvmlDeviceGetHandleByIndex, index)
            pci = _call("nvmlDeviceGetPciInfo", pynvml.nvmlDeviceGetPciInfo, handle)
            gpu = GpuIdentity(
                index=index,
                uuid=_text(_call("nvmlDeviceGetUUID", pynvml.nvmlDeviceGetUUID, handle)),
                pci_bus_id=_text(pci.busId),
                minor_number=_call(
                    "nvmlDeviceGetMinorNumber", pynvml.nvmlDeviceGetMinorNumber, handle
                ),
                model_name=_text(_call("nvmlDeviceGetName", pynvml.nvmlDeviceGetName, handle)),
            )
            gpus.append(gpu)
            with self._lock:
                self._handles[gpu.uuid] = handle
            migs.extend(self._discover_mig(gpu, handle))
        return DeviceTree(gpus=tuple(gpus), mig_devices=tuple(migs))

    def _discover_mig(self, gpu: GpuIdentity, handle: Any) -> list[MigIdentity]:
        try:
            current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError:
            return []  # Not a MIG-capable GPU.
        if current != pynvml.NVML_DEVICE_MIG_ENABLE:
            return []
        found: list[MigIdentity] = []
        slots = _call(
            "nvmlDeviceGetMaxMigDeviceCount", pynvml.nvmlDeviceGetMaxMigDeviceCount, handle
        )
        for slot in range(slots):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError_NotFound:
                continue
            attrs = _call("nvmlDeviceGetAttributes", pynvml.nvmlDeviceGetAttributes, mig)
            identity = MigIdentity(
                parent=gpu,
                uuid=_text(_call("nvmlDeviceGetUUID", pynvml.nvmlDeviceGetUUID, mig)),
                gpu_instance_id=_call(
                    "nvmlDeviceGetGpuInstanceId", pynvml.nvmlDeviceGetGpuInstanceId, mig
                ),
                compute_instance_id=_call(
                    "nvmlDeviceGetComputeInstanceId", pynvml.nvmlDeviceGetComputeInstanceId, mig
                ),
                profile=mig_profile_name(
                    gpu_slices=int(attrs.gpuInstanceSliceCount),
                    compute_slices=int(attrs.computeInstanceSliceCount),
                    memory_mib=int(attrs.memorySizeMB),
                ),
            )
            found.append(identity)
            with self._lock:
                self._handles[identity.uuid] = mig
        return found

    def read_gpu(self, gpu: GpuIdentity) -> GpuReading:
        handle = self._handle(gpu.uuid)
        f = _FieldReader()
        mig_mode = f.read("mig_mode", lambda: pynvml.nvmlDeviceGetMigMode(handle)[0])
        mig_enabled = mig_mode == pynvml.NVML_DEVICE_MIG_ENABLE
        util = (
            None
            if mig_enabled
            else f.read("utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
        )
        constraints = f.read(
            "power_limit_constraints",
            lambda: pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle),
        )
        power_mw = f.read("power_usage", lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
        limit_mw = f.read("power_limit", lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle))
        default_mw = f.read(
            "power_default_limit", lambda: pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle)
        )
        return GpuReading(
            identity=gpu,
            mig_enabled=mig_enabled,
            gpu_util_pct=None if util is None else float(util.gpu),
            mem_copy_util_pct=None if util is None else float(util.memory),
            memory=f.read("memory", lambda: _memory(handle)),
            power_w=None if power_mw is None else power_mw / 1000.0,
            energy_mj=f.read(
                "total_energy", lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            ),
            gpu_temp_c=f.read(
                "gpu_temp",
                lambda: float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
            ),
            memory_temp_c=f.read("memory_temp", lambda: _memory_temp(handle)),
            sm_clock_mhz=f.read(
                "sm_clock",
                lambda: float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            ),
            mem_clock_mhz=f.read(
                "mem_clock",
                lambda: float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
            ),
            pcie_replay_count=f.read(
                "pcie_replay", lambda: float(pynvml.nvmlDeviceGetPcieReplayCounter(handle))
            ),
            power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
            power_default_w=None if default_mw is None else default_mw / 1000.0,
            power_min_w=None if constraints is None else constraints[0] / 1000.0,
            power_max_w=None if constraints is None else constraints[1] / 1000.0,
            clock_event_reasons=f.read("clock_event_reasons", lambda: _clock_event_reasons(handle)),
            field_errors=tuple(f.errors),
        )

    def read_mig(self, mig: MigIdentity) -> MigReading:
        handle = self._handle(mig.uuid)
        f = _FieldReader()
        return MigReading(
            identity=mig,
            memory=f.read("memory", lambda: _memory(handle)),
            field_errors=tuple(f.errors),
        )

    def tuning_limits(self, gpu: GpuIdentity) -> TuningLimits:
        handle = self._handle(gpu.uuid)
        low, high = _call(
            "nvmlDeviceGetPowerManagementLimitConstraints",
            pynvml.nvmlDeviceGetPowerManagementLimitConstraints,
            handle,
        )
        memory_clocks = _call(
            "nvmlDeviceGetSupportedMemoryClocks", pynvml.nvmlDeviceGetSupportedMemoryClocks, handle
        )
        graphics: set[int] = set()
        for mem in memory_clocks:
            graphics.update(
                _call(
                    "nvmlDeviceGetSupportedGraphicsClocks",
                    pynvml.nvmlDeviceGetSupportedGraphicsClocks,
                    handle,
                    mem,
                )
            )
        return TuningLimits(
            power_min_w=low / 1000.0,
            power_max_w=high / 1000.0,
            power_default_w=_call(
                "nvmlDeviceGetPowerManagementDefaultLimit",
                pynvml.nvmlDeviceGetPowerManagementDefaultLimit,
                handle,
            )
            / 1000.0,
            power_current_w=_call(
                "nvmlDeviceGetPowerManagementLimit",
                pynvml.nvmlDeviceGetPowerManagementLimit,
                handle,
            )
            / 1000.0,
            memory_clocks_mhz=tuple(sorted(int(m) for m in memory_clocks)),
            graphics_clocks_mhz=tuple(sorted(graphics)),
        )

    def compute_processes(self, gpu: GpuIdentity) -> int:
        handle = self._handle(gpu.uuid)
        running = _call(
            "nvmlDeviceGetComputeRunningProcesses",
            pynvml.nvmlDeviceGetComputeRunningProcesses,
            handle,
        )
        return len(running)

    def set_power_limit(self, gpu: GpuIdentity, *, watts: float) -> None:
        _call(
            "nvmlDeviceSetPowerManagementLimit",
            pynvml.nvmlDeviceSetPowerManagementLimit,
            self._handle(gpu.uuid),
            round(watts * 1000),
        )

    def lock_gpu_clocks(self, gpu: GpuIdentity, *, min_mhz: int, max_mhz: int) -> None:
        _call(
            "nvmlDeviceSetGpuLockedClocks",
            pynvml.nvmlDeviceSetGpuLockedClocks,
            self._handle(gpu.uuid),
            min_mhz,
            max_mhz,
        )

    def reset_gpu_clocks(self, gpu: GpuIdentity) -> None:
        _call(
            "nvmlDeviceResetGpuLockedClocks",
            pynvml.nvmlDeviceResetGpuLockedClocks,
            self._handle(gpu.uuid),
        )

    def lock_memory_clocks(self, gpu: GpuIdentity, *, min_mhz: int, max_mhz: int) -> None:
        _call(
            "nvmlDeviceSetMemoryLockedClocks",
            pynvml.nvmlDeviceSetMemoryLockedClocks,
            self._handle(gpu.uuid),
            min_mhz,
            max_mhz,
        )

    def reset_memory_clocks(self, gpu: GpuIdentity) -> None:
        _call(
            "nvmlDeviceResetMemoryLockedClocks",
            pynvml.nvmlDeviceResetMemoryLockedClocks,
            self._handle(gpu.uuid),
        )

    def _ensure_event_set(self, gpus: Sequence[GpuIdentity]) -> None:
        wanted = frozenset(gpu.uuid for gpu in gpus)
        if self._event_set is not None and wanted == self._event_uuids:
            return
        if self._event_set is not None:
            pynvml.nvmlEventSetFree(self._event_set)
            self._event_set = None
        event_set = _call("nvmlEventSetCreate", pynvml.nvmlEventSetCreate)
        for gpu in gpus:
            _call(
                "nvmlDeviceRegisterEvents",
                pynvml.nvmlDeviceRegisterEvents,
                self._handle(gpu.uuid),
                pynvml.nvmlEventTypeXidCriticalError,
                event_set,
            )
        self._event_set = event_set
        self._event_uuids = wanted

    def wait_xid_events(self, gpus: Sequence[GpuIdentity], *, timeout_s: float) -> list[XidEvent]:
        self._ensure_event_set(gpus)
        try:
            data = pynvml.nvmlEventSetWait_v2(self._event_set, max(1, int(timeout_s * 1000)))
        except pynvml.NVMLError_Timeout:
            return []
        except pynvml.NVMLError as exc:
            raise _translate(exc, "nvmlEventSetWait") from exc
        if not data.eventType & pynvml.nvmlEventTypeXidCriticalError:
            return []
        uuid = _text(_call("nvmlDeviceGetUUID", pynvml.nvmlDeviceGetUUID, data.device))
        instance = int(data.gpuInstanceId)
        return [
            XidEvent(
                gpu_uuid=uuid,
                xid=int(data.eventData),
                gpu_instance_id=None if instance == _NO_INSTANCE else instance,
            )
        ]

    def profiling_supported(self, gpu: GpuIdentity) -> bool:
        return _call("nvmlGpmQueryDeviceSupport", nvml_profiling.supported, self._handle(gpu.uuid))

    def take_profiling_sample(
        self, gpu: GpuIdentity, *, gpu_instance_id: int | None = None
    ) -> ProfilingSample:
        handle = self._handle(gpu.uuid)
        return _call("nvmlGpmSampleGet", nvml_profiling.take_sample, handle, gpu_instance_id)

    def profiling_between(
        self, earlier: ProfilingSample, later: ProfilingSample
    ) -> ProfilingReading:
        return _call("nvmlGpmMetricsGet", nvml_profiling.between, earlier, later)

    def free_profiling_sample(self, sample: ProfilingSample) -> None:
        nvml_profiling.free(sample.handle)
