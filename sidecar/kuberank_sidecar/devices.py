"""What the sidecar knows about a GPU: plain data, and the NVML backend interface.

Everything here is pure data. The real backend (`nvml_adapter`) and the scripted fake
(`fake_nvml`) both return these dataclasses, so nothing above them knows which one runs.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class NvmlErrorKind(enum.Enum):
    """Why an NVML call failed; the value is the `error` label of the error counter."""

    GPU_LOST = "gpu_lost"
    NO_PERMISSION = "no_permission"
    NOT_SUPPORTED = "not_supported"
    TIMEOUT = "timeout"
    NOT_FOUND = "not_found"
    INVALID_ARGUMENT = "invalid_argument"
    UNINITIALIZED = "uninitialized"
    OTHER = "other"


# A GPU that raised one of these is gone until NVML finds it again.
FATAL_ERROR_KINDS = frozenset({NvmlErrorKind.GPU_LOST, NvmlErrorKind.UNINITIALIZED})


class NvmlError(Exception):
    """An NVML call failed; `operation` names the call, `kind` says why."""

    def __init__(self, kind: NvmlErrorKind, *, operation: str, detail: str = "") -> None:
        self.kind = kind
        self.operation = operation
        self.detail = detail
        super().__init__(f"NVML {operation} failed: {kind.value}{': ' + detail if detail else ''}")


@dataclass(frozen=True)
class GpuIdentity:
    """A physical GPU as dcgm-exporter labels it."""

    index: int
    uuid: str
    pci_bus_id: str
    minor_number: int
    model_name: str

    @property
    def device(self) -> str:
        return f"nvidia{self.minor_number}"


@dataclass(frozen=True)
class MigIdentity:
    """A MIG device (one GPU instance + compute instance) on a parent GPU."""

    parent: GpuIdentity
    uuid: str
    gpu_instance_id: int
    compute_instance_id: int
    profile: str


@dataclass(frozen=True)
class FieldError:
    """A single field that could not be read this poll; the rest of the reading is valid."""

    field: str
    kind: NvmlErrorKind


@dataclass(frozen=True)
class MemoryReading:
    """Framebuffer memory in MiB, as dcgm-exporter reports it (used excludes reserved)."""

    total_mib: float
    used_mib: float
    free_mib: float
    reserved_mib: float


@dataclass(frozen=True)
class GpuReading:
    """One poll of a whole physical GPU. None means the field could not be read."""

    identity: GpuIdentity
    mig_enabled: bool
    gpu_util_pct: float | None = None
    mem_copy_util_pct: float | None = None
    memory: MemoryReading | None = None
    power_w: float | None = None
    energy_mj: float | None = None
    gpu_temp_c: float | None = None
    memory_temp_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    pcie_replay_count: float | None = None
    power_limit_w: float | None = None
    power_default_w: float | None = None
    power_min_w: float | None = None
    power_max_w: float | None = None
    clock_event_reasons: int | None = None
    field_errors: tuple[FieldError, ...] = ()


@dataclass(frozen=True)
class MigReading:
    """One poll of a MIG device: NVML gives memory per instance, nothing else."""

    identity: MigIdentity
    memory: MemoryReading | None = None
    field_errors: tuple[FieldError, ...] = ()


@dataclass(frozen=True)
class ProfilingSample:
    """One NVML GPM sample of a GPU or GPU instance; `handle` belongs to the backend that took
    it, which alone reads and frees it."""

    taken_at: float
    handle: object


@dataclass(frozen=True)
class ProfilingReading:
    """GPM metrics averaged between two samples, in dcgm-exporter's units: ratios 0..1, bytes/s.
    None: NVML did not give that metric for this device."""

    interval_s: float
    gr_engine_active: float | None = None
    sm_active: float | None = None
    sm_occupancy: float | None = None
    tensor_active: float | None = None
    dram_active: float | None = None
    pcie_tx_bytes_per_s: float | None = None
    pcie_rx_bytes_per_s: float | None = None
    field_errors: tuple[FieldError, ...] = ()

    @classmethod
    def of(
        cls, values: Mapping[str, float], *, interval_s: float, errors: Sequence[FieldError] = ()
    ) -> ProfilingReading:
        """A reading from metric values by field name; a field not in `values` is None."""
        return cls(
            interval_s=interval_s,
            gr_engine_active=values.get("gr_engine_active"),
            sm_active=values.get("sm_active"),
            sm_occupancy=values.get("sm_occupancy"),
            tensor_active=values.get("tensor_active"),
            dram_active=values.get("dram_active"),
            pcie_tx_bytes_per_s=values.get("pcie_tx_bytes_per_s"),
            pcie_rx_bytes_per_s=values.get("pcie_rx_bytes_per_s"),
            field_errors=tuple(errors),
        )


@dataclass(frozen=True)
class XidEvent:
    """An XID critical error reported by the driver for a GPU (or one of its GPU instances)."""

    gpu_uuid: str
    xid: int
    # None: the event concerns the whole GPU rather than one GPU instance.
    gpu_instance_id: int | None = None


@dataclass(frozen=True)
class TuningLimits:
    """What the card accepts for power limit and locked clocks."""

    power_min_w: float
    power_max_w: float
    power_default_w: float
    power_current_w: float
    memory_clocks_mhz: tuple[int, ...] = ()
    graphics_clocks_mhz: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeviceTree:
    """Every GPU the backend sees, and the MIG devices on each."""

    gpus: tuple[GpuIdentity, ...]
    mig_devices: tuple[MigIdentity, ...] = field(default=())

    def find(self, device_id: str) -> GpuIdentity | MigIdentity | None:
        """Find a GPU or MIG device by UUID, or a GPU by its index ("0")."""
        for mig in self.mig_devices:
            if mig.uuid == device_id:
                return mig
        for gpu in self.gpus:
            if gpu.uuid == device_id or (device_id.isdigit() and gpu.index == int(device_id)):
                return gpu
        return None


def mig_profile_name(*, gpu_slices: int, compute_slices: int, memory_mib: int) -> str:
    """NVIDIA's profile name ("1g.10gb", "1c.2g.20gb") from a MIG device's attributes."""
    gigabytes = math.ceil(memory_mib / 1024)
    prefix = f"{compute_slices}c." if compute_slices != gpu_slices else ""
    return f"{prefix}{gpu_slices}g.{gigabytes}gb"


class NvmlBackend(Protocol):
    """The one interface to NVML. Implementations: nvml_adapter.RealNvml, fake_nvml.FakeNvml."""

    def open(self) -> None:
        """Initialise the library; raises NvmlError."""

    def close(self) -> None:
        """Release the library; never raises."""

    def discover(self) -> DeviceTree:
        """List GPUs and MIG devices."""

    def read_gpu(self, gpu: GpuIdentity) -> GpuReading:
        """Read a whole GPU; per-field failures go to field_errors, a lost GPU raises."""

    def read_mig(self, mig: MigIdentity) -> MigReading:
        """Read a MIG device's memory."""

    def tuning_limits(self, gpu: GpuIdentity) -> TuningLimits:
        """The power-limit range and supported clocks of a GPU."""

    def compute_processes(self, gpu: GpuIdentity) -> int:
        """How many processes hold a CUDA context on the GPU (any container's, any MIG
        slice's); raises NvmlError where the driver cannot tell."""

    def set_power_limit(self, gpu: GpuIdentity, *, watts: float) -> None:
        """Set the power-management limit (needs CAP_SYS_ADMIN)."""

    def lock_gpu_clocks(self, gpu: GpuIdentity, *, min_mhz: int, max_mhz: int) -> None:
        """Lock the graphics clock to a range."""

    def reset_gpu_clocks(self, gpu: GpuIdentity) -> None:
        """Undo lock_gpu_clocks."""

    def lock_memory_clocks(self, gpu: GpuIdentity, *, min_mhz: int, max_mhz: int) -> None:
        """Lock the memory clock to a range."""

    def reset_memory_clocks(self, gpu: GpuIdentity) -> None:
        """Undo lock_memory_clocks."""

    def wait_xid_events(self, gpus: Sequence[GpuIdentity], *, timeout_s: float) -> list[XidEvent]:
        """Block up to timeout_s for XID critical errors on these GPUs."""

    def profiling_supported(self, gpu: GpuIdentity) -> bool:
        """Whether the GPU has NVML GPM (Hopper and newer); raises NvmlError if it cannot tell."""

    def take_profiling_sample(
        self, gpu: GpuIdentity, *, gpu_instance_id: int | None = None
    ) -> ProfilingSample:
        """A GPM sample of the GPU, or of one of its GPU instances; free_profiling_sample frees it.
        Raises NvmlError, and then holds nothing."""

    def profiling_between(
        self, earlier: ProfilingSample, later: ProfilingSample
    ) -> ProfilingReading:
        """The metrics between two samples of the same device; frees neither."""

    def free_profiling_sample(self, sample: ProfilingSample) -> None:
        """Release a sample; never raises."""
