"""Metric families from the latest samples: pure functions, plus the prometheus-client Collector.

Names, units and labels follow dcgm-exporter for the fields both have, so its dashboards and
alert rules work unchanged; what DCGM lacks is under kuberank_gpu_*.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from kuberank_sidecar.clock_events import active_reasons
from kuberank_sidecar.devices import GpuReading, MemoryReading
from kuberank_sidecar.records import DeviceSample, OwnedDevice, XidTally
from kuberank_sidecar.tuning_plans import GpuTuningStatus, TuningPlan, TuningState

WHOLE_GPU = " Whole-GPU value, also on a MIG device (shared by every slice of the GPU)."
PER_INSTANCE = " On a MIG device: that GPU instance's memory."
NO_MIG = " Whole GPU only: not exported for MIG devices (NVML has no per-instance utilization)."
PROFILING = (
    " From NVML GPM (Hopper and newer; absent elsewhere), averaged between the two latest polls;"
    " on a MIG device, that GPU instance's."
)

# dcgm-exporter's profiling fields (its names, types and help text): metric, ProfilingReading field
PROFILING_FIELDS: tuple[tuple[str, str, str], ...] = (
    (
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "gr_engine_active",
        "Ratio of time the graphics engine is active.",
    ),
    (
        "DCGM_FI_PROF_SM_ACTIVE",
        "sm_active",
        "The ratio of cycles an SM has at least 1 warp assigned.",
    ),
    (
        "DCGM_FI_PROF_SM_OCCUPANCY",
        "sm_occupancy",
        "The ratio of number of warps resident on an SM.",
    ),
    (
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "tensor_active",
        "Ratio of cycles the tensor (HMMA) pipe is active (NVML: any tensor pipe).",
    ),
    (
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "dram_active",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
    ),
    (
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "pcie_tx_bytes_per_s",
        "The rate of data transmitted over the PCIe bus - including both protocol headers and "
        "data payloads - in bytes per second.",
    ),
    (
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "pcie_rx_bytes_per_s",
        "The rate of data received over the PCIe bus - including both protocol headers and "
        "data payloads - in bytes per second.",
    ),
)


@dataclass(frozen=True)
class ExportContext:
    """Labels and settings that come from the pod, not from NVML."""

    hostname: str
    pod: str = ""
    namespace: str = ""
    container: str = ""
    vram_safety_margin: float = 0.10
    stale_after_s: float = 45.0


@dataclass(frozen=True)
class TelemetryView:
    """Everything a scrape renders, copied out of the background threads' holders."""

    samples: list[DeviceSample]
    xids: dict[str, XidTally]
    errors: dict[tuple[str, str], int]
    tuning: dict[str, GpuTuningStatus]
    plans: dict[str, TuningPlan]
    now: float
    poll_duration_s: float | None = None
    owned_source: str = "none"


def device_labels(device: OwnedDevice, ctx: ExportContext) -> dict[str, str]:
    """dcgm-exporter's label set, in its order, with the pod's identity appended."""
    gpu = device.gpu
    labels = {
        "gpu": str(gpu.index),
        "UUID": gpu.uuid,
        "pci_bus_id": gpu.pci_bus_id,
        "device": gpu.device,
        "modelName": gpu.model_name,
    }
    if device.mig is not None:
        labels["GPU_I_PROFILE"] = device.mig.profile
        labels["GPU_I_ID"] = str(device.mig.gpu_instance_id)
    labels["Hostname"] = ctx.hostname
    labels["container"] = device.container or ctx.container
    labels["namespace"] = ctx.namespace
    labels["pod"] = ctx.pod
    return labels


def pod_labels(ctx: ExportContext) -> dict[str, str]:
    return {"Hostname": ctx.hostname, "namespace": ctx.namespace, "pod": ctx.pod}


class _Families:
    """Families by name, created on first use, in the order they were declared."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def add(self, name: str, kind: str, doc: str, labels: dict[str, str], value: float) -> None:
        family = self._families.get(name)
        if family is None:
            family = Metric(name, doc, kind)
            self._families[name] = family
        family.add_sample(name, labels, value)

    def values(self) -> list[Metric]:
        return list(self._families.values())


def _memory_of(sample: DeviceSample) -> MemoryReading | None:
    if sample.device.mig is not None:
        return sample.mig.memory if sample.mig is not None else None
    return sample.gpu.memory if sample.gpu is not None else None


def _dcgm_fields(
    gpu: GpuReading, memory: MemoryReading | None, *, mig: bool
) -> list[tuple[str, str, str, float | None]]:
    fields: list[tuple[str, str, str, float | None]] = []
    if not mig:
        fields += [
            ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)." + NO_MIG, gpu.gpu_util_pct),
            (
                "DCGM_FI_DEV_MEM_COPY_UTIL",
                "gauge",
                "Memory copy utilization (in %)." + NO_MIG,
                gpu.mem_copy_util_pct,
            ),
        ]
    fields += [
        (
            "DCGM_FI_DEV_FB_USED",
            "gauge",
            "Framebuffer memory used (in MiB)." + PER_INSTANCE,
            None if memory is None else memory.used_mib,
        ),
        (
            "DCGM_FI_DEV_FB_FREE",
            "gauge",
            "Framebuffer memory free (in MiB)." + PER_INSTANCE,
            None if memory is None else memory.free_mib,
        ),
        (
            "DCGM_FI_DEV_FB_RESERVED",
            "gauge",
            "Framebuffer memory reserved by the driver (in MiB)." + PER_INSTANCE,
            None if memory is None else memory.reserved_mib,
        ),
        ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)." + WHOLE_GPU, gpu.power_w),
        (
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "counter",
            "Total energy consumption since boot (in mJ)." + WHOLE_GPU,
            gpu.energy_mj,
        ),
        ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)." + WHOLE_GPU, gpu.gpu_temp_c),
        (
            "DCGM_FI_DEV_MEMORY_TEMP",
            "gauge",
            "Memory temperature (in C)." + WHOLE_GPU,
            gpu.memory_temp_c,
        ),
        (
            "DCGM_FI_DEV_SM_CLOCK",
            "gauge",
            "SM clock frequency (in MHz)." + WHOLE_GPU,
            gpu.sm_clock_mhz,
        ),
        (
            "DCGM_FI_DEV_MEM_CLOCK",
            "gauge",
            "Memory clock frequency (in MHz)." + WHOLE_GPU,
            gpu.mem_clock_mhz,
        ),
        (
            "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
            "counter",
            "Total number of PCIe retries." + WHOLE_GPU,
            gpu.pcie_replay_count,
        ),
        (
            "kuberank_gpu_power_limit_watts",
            "gauge",
            "Power limit the GPU enforces now (in W)." + WHOLE_GPU,
            gpu.power_limit_w,
        ),
        (
            "kuberank_gpu_power_limit_default_watts",
            "gauge",
            "Power limit the GPU ships with (in W)." + WHOLE_GPU,
            gpu.power_default_w,
        ),
        (
            "kuberank_gpu_power_limit_min_watts",
            "gauge",
            "Lowest power limit the GPU accepts (in W)." + WHOLE_GPU,
            gpu.power_min_w,
        ),
        (
            "kuberank_gpu_power_limit_max_watts",
            "gauge",
            "Highest power limit the GPU accepts (in W)." + WHOLE_GPU,
            gpu.power_max_w,
        ),
    ]
    return fields


def is_fresh(sample: DeviceSample, *, now: float, stale_after_s: float) -> bool:
    """A sample is used only while it is recent: a hung driver must not freeze the values."""
    return (
        sample.error is None and sample.gpu is not None and now - sample.taken_at <= stale_after_s
    )


def render_families(view: TelemetryView, ctx: ExportContext) -> list[Metric]:
    """Every metric family of one scrape, from a copied view of the sidecar's state."""
    out = _Families()
    for sample in sorted(view.samples, key=lambda s: (s.device.gpu.index, s.device.uuid)):
        labels = device_labels(sample.device, ctx)
        fresh = is_fresh(sample, now=view.now, stale_after_s=ctx.stale_after_s)
        out.add(
            "kuberank_gpu_available",
            "gauge",
            "1 when the device answered NVML recently, 0 when it is lost, failing or its last "
            "reading is older than --stale-after (its other values are then left out).",
            labels,
            1.0 if fresh else 0.0,
        )
        out.add(
            "kuberank_gpu_sample_age_seconds",
            "gauge",
            "Seconds since the device's latest NVML reading.",
            labels,
            max(0.0, view.now - sample.taken_at),
        )
        tally = view.xids.get(sample.device.uuid)
        out.add(
            "DCGM_FI_DEV_XID_ERRORS",
            "gauge",
            "Value of the last XID error encountered (0: none since the sidecar started).",
            labels,
            float(tally.last_xid) if tally else 0.0,
        )
        if tally is not None:
            for xid, count in sorted(tally.counts.items()):
                out.add(
                    "kuberank_gpu_xid_events_total",
                    "counter",
                    "XID critical errors seen since the sidecar started, by XID.",
                    {**labels, "xid": str(xid)},
                    float(count),
                )
        _tuning_families(out, sample.device, labels, view)
        if not fresh or sample.gpu is None:
            continue
        gpu = sample.gpu
        memory = _memory_of(sample)
        for name, kind, doc, value in _dcgm_fields(gpu, memory, mig=sample.device.mig is not None):
            if value is not None:
                out.add(name, kind, doc, labels, value)
        if sample.profiling is not None:
            for name, field, doc in PROFILING_FIELDS:
                measured = getattr(sample.profiling, field)
                if measured is not None:
                    out.add(name, "gauge", doc + PROFILING, labels, float(measured))
        if gpu.clock_event_reasons is not None:
            for reason, active in active_reasons(gpu.clock_event_reasons).items():
                out.add(
                    "kuberank_gpu_clock_event_active",
                    "gauge",
                    "1 while this clock-event reason holds the clocks down (power cap, thermal "
                    "slowdown, …), from NVML's clock-event reasons." + WHOLE_GPU,
                    {**labels, "reason": reason},
                    1.0 if active else 0.0,
                )
        if memory is not None:
            total = memory.used_mib + memory.free_mib + memory.reserved_mib
            out.add(
                "kuberank_gpu_vram_safety_margin_ratio",
                "gauge",
                "Share of the device's memory kept free as a safety margin (--vram-safety-margin).",
                labels,
                ctx.vram_safety_margin,
            )
            out.add(
                "kuberank_gpu_vram_headroom_mib",
                "gauge",
                "MiB the workload may still allocate before it eats into the safety margin: "
                "total × (1 − margin) − used − reserved; negative once inside the margin."
                + PER_INSTANCE,
                labels,
                total * (1.0 - ctx.vram_safety_margin) - memory.used_mib - memory.reserved_mib,
            )
    for (operation, error), count in sorted(view.errors.items()):
        out.add(
            "kuberank_gpu_nvml_errors_total",
            "counter",
            "NVML calls that failed, by operation and error (not_supported repeats every poll "
            "for fields the GPU lacks).",
            {**pod_labels(ctx), "operation": operation, "error": error},
            float(count),
        )
    if view.poll_duration_s is not None:
        out.add(
            "kuberank_gpu_poll_duration_seconds",
            "gauge",
            "How long the latest background NVML poll of the pod's devices took.",
            pod_labels(ctx),
            view.poll_duration_s,
        )
    out.add(
        "kuberank_gpu_owned_devices",
        "gauge",
        "Devices this pod owns and exports, by where ownership came from "
        "(pod-resources, handshake, flag, none).",
        {**pod_labels(ctx), "source": view.owned_source},
        float(len(view.samples)),
    )
    return out.values()


def _tuning_families(
    out: _Families, device: OwnedDevice, labels: dict[str, str], view: TelemetryView
) -> None:
    status = view.tuning.get(device.gpu.uuid)
    if status is None:
        return
    out.add(
        "kuberank_gpu_tuning_state",
        "gauge",
        "1 for the GPU's power-limit/clock tuning state (disabled, pending, applied, refused, "
        "denied, failed, restored); reason says why it was refused, denied or failed.",
        {**labels, "state": status.state.value, "reason": status.reason},
        1.0,
    )
    plan = view.plans.get(device.gpu.uuid)
    if plan is None or status.state is not TuningState.APPLIED:
        return
    for clock, locked in (("graphics", plan.lock_gpu_clocks), ("memory", plan.lock_memory_clocks)):
        if locked is None:
            continue
        for bound, value in (("min", locked.min_mhz), ("max", locked.max_mhz)):
            out.add(
                f"kuberank_gpu_locked_clock_{bound}_mhz",
                "gauge",
                f"{bound.capitalize()} of the clock range this sidecar locked (in MHz); absent "
                "when clocks are not locked by it." + WHOLE_GPU,
                {**labels, "clock": clock},
                float(value),
            )


class SidecarCollector(Collector):
    """prometheus-client Collector: yields the families of the latest samples at scrape time."""

    def __init__(self, view: Callable[[], TelemetryView], ctx: ExportContext) -> None:
        self._view = view
        self._ctx = ctx

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        yield from render_families(self._view(), self._ctx)
        scrape = Metric(
            "kuberank_gpu_scrape_duration_seconds",
            "Time this scrape spent building its metric families (no NVML call is made).",
            "gauge",
        )
        scrape.add_sample(scrape.name, pod_labels(self._ctx), time.perf_counter() - started)
        yield scrape
