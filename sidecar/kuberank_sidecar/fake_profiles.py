"""The fake hosts FakeNvml can play: one spec per GPU (model, memory, power and clock ranges,
MIG layout, failure switches) and stable UUID-shaped ids."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

from kuberank_sidecar.devices import NvmlErrorKind


@dataclass(frozen=True)
class FakeGpuSpec:
    """The baseline of one fake GPU; a state file overrides these values."""

    model_name: str
    pci_bus: int
    fb_total_mib: float
    fb_reserved_mib: float
    fb_used_mib: float
    utilization: float
    mem_copy_utilization: float
    power_w: float
    temperature: float
    memory_temperature: float
    sm_clock_mhz: float
    mem_clock_mhz: float
    power_default_w: float
    power_min_w: float
    power_max_w: float
    memory_clocks_mhz: tuple[int, ...]
    graphics_clocks_mhz: tuple[int, ...]
    mig_profile: str | None = None
    mig_count: int = 0
    mig_memory_mib: float = 0.0
    mig_first_instance_id: int = 0
    # NVML GPM (the DCGM_FI_PROF_* source) exists on Hopper and newer only.
    gpm: bool = False
    lost: bool = False
    slow_read_s: float = 0.0
    unsupported: tuple[str, ...] = ()
    setter_error: NvmlErrorKind | None = None


@dataclass(frozen=True)
class FakeProfile:
    name: str
    description: str
    gpus: tuple[FakeGpuSpec, ...]


def _h100(index: int, **changes: Any) -> FakeGpuSpec:
    spec = FakeGpuSpec(
        model_name="NVIDIA H100 80GB HBM3",
        pci_bus=(0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)[index % 8],
        fb_total_mib=81559.0,
        fb_reserved_mib=534.0,
        fb_used_mib=4000.0 + 7000.0 * index,
        utilization=float((index * 13 + 5) % 100),
        mem_copy_utilization=float((index * 7 + 3) % 100),
        power_w=120.0 + 55.0 * index,
        temperature=34.0 + 3.0 * index,
        memory_temperature=40.0 + 2.0 * index,
        sm_clock_mhz=1980.0,
        mem_clock_mhz=2619.0,
        power_default_w=700.0,
        power_min_w=200.0,
        power_max_w=700.0,
        memory_clocks_mhz=(2619,),
        graphics_clocks_mhz=tuple(range(345, 1981, 15)),
        gpm=True,
    )
    return dataclasses.replace(spec, **changes)


# Ampere: no GPM, so no profiling metrics (dcgm-exporter gets them from DCGM's own profiler).
_A100_MIG = FakeGpuSpec(
    model_name="NVIDIA A100-SXM4-80GB",
    pci_bus=0x07,
    fb_total_mib=81920.0,
    fb_reserved_mib=0.0,
    fb_used_mib=0.0,
    utilization=0.0,
    mem_copy_utilization=0.0,
    power_w=180.0,
    temperature=41.0,
    memory_temperature=47.0,
    sm_clock_mhz=1410.0,
    mem_clock_mhz=1593.0,
    power_default_w=400.0,
    power_min_w=100.0,
    power_max_w=400.0,
    memory_clocks_mhz=(1593,),
    graphics_clocks_mhz=tuple(range(210, 1411, 15)),
    mig_profile="1g.10gb",
    mig_count=7,
    mig_memory_mib=9728.0,
    # An A100's seven 1g.10gb instances get GPU instance IDs 7 to 13.
    mig_first_instance_id=7,
)

# Hopper in MIG mode: GPM per GPU instance (nvmlGpmMigSampleGet).
_H100_MIG = _h100(
    0,
    fb_used_mib=0.0,
    utilization=0.0,
    mig_profile="1g.10gb",
    mig_count=7,
    mig_memory_mib=9856.0,
    mig_first_instance_id=7,
)

PROFILES: dict[str, FakeProfile] = {
    p.name: p
    for p in (
        FakeProfile("h100x8", "8 × H100 80GB HBM3, an HGX host", tuple(_h100(i) for i in range(8))),
        FakeProfile("h100x1", "1 × H100 80GB HBM3", (_h100(0),)),
        FakeProfile("a100-mig-1g.10gb", "1 × A100 80GB with 7 MIG 1g.10gb slices", (_A100_MIG,)),
        FakeProfile("h100-mig-1g.10gb", "1 × H100 80GB with 7 MIG 1g.10gb slices", (_H100_MIG,)),
        FakeProfile(
            "h100x1-no-permission",
            "1 × H100 where setting power limits or clocks fails with NoPermission",
            (_h100(0, setter_error=NvmlErrorKind.NO_PERMISSION),),
        ),
        FakeProfile(
            "h100x1-not-supported",
            "1 × H100 where memory temperature, PCIe replays and energy are NotSupported",
            (_h100(0, unsupported=("memory_temp", "pcie_replay", "total_energy")),),
        ),
        FakeProfile("h100x1-lost", "1 × H100 that has fallen off the bus", (_h100(0, lost=True),)),
        FakeProfile(
            "h100x1-slow", "1 × H100 whose every read takes 3 s", (_h100(0, slow_read_s=3.0),)
        ),
    )
}


def fake_uuid(profile: str, index: int, *, prefix: str = "GPU") -> str:
    """A stable, UUID-shaped id for a fake device."""
    digest = hashlib.sha256(f"{profile}/{prefix}/{index}".encode()).hexdigest()
    return f"{prefix}-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
