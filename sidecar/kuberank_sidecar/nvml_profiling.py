"""NVML's GPM (GPU performance monitoring, Hopper and newer): the profiling half of the NVML
adapter. Calls raise pynvml's errors; nvml_adapter.RealNvml translates them.

A GPM metric is an average between two samples, so a sample is allocated here and freed by
whoever holds it (profiling.ProfilingSampler), never leaked when a call fails.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import pynvml

from kuberank_sidecar.devices import FieldError, NvmlErrorKind, ProfilingReading, ProfilingSample

_PERCENT = 0.01  # NVML gives 0..100, dcgm-exporter's profiling ratios are 0..1
_MIB = 1024.0 * 1024.0  # NVML gives PCIe rates in MiB/s, dcgm-exporter in bytes/s

# (GPM metric id, ProfilingReading field, scale to dcgm-exporter's unit)
METRICS: tuple[tuple[int, str, float], ...] = (
    (pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL, "gr_engine_active", _PERCENT),
    (pynvml.NVML_GPM_METRIC_SM_UTIL, "sm_active", _PERCENT),
    (pynvml.NVML_GPM_METRIC_SM_OCCUPANCY, "sm_occupancy", _PERCENT),
    (pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL, "tensor_active", _PERCENT),
    (pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL, "dram_active", _PERCENT),
    (pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC, "pcie_tx_bytes_per_s", _MIB),
    (pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC, "pcie_rx_bytes_per_s", _MIB),
)


def supported(handle: Any) -> bool:
    """Whether the device has GPM; False too for a driver without the GPM functions."""
    try:
        return bool(pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
        return False


def take_sample(handle: Any, gpu_instance_id: int | None) -> ProfilingSample:
    """A sample of the whole GPU, or of one GPU instance (`handle` is then the parent GPU's)."""
    raw = pynvml.nvmlGpmSampleAlloc()
    try:
        if gpu_instance_id is None:
            pynvml.nvmlGpmSampleGet(handle, raw)
        else:
            pynvml.nvmlGpmMigSampleGet(handle, gpu_instance_id, raw)
    except BaseException:
        free(raw)
        raise
    return ProfilingSample(taken_at=time.monotonic(), handle=raw)


def between(earlier: ProfilingSample, later: ProfilingSample) -> ProfilingReading:
    """The metrics averaged from `earlier` to `later`; a metric NVML refuses is left out."""
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(METRICS)
    request.sample1 = earlier.handle
    request.sample2 = later.handle
    for slot, (metric_id, _field, _scale) in enumerate(METRICS):
        request.metrics[slot].metricId = metric_id
    pynvml.nvmlGpmMetricsGet(request)
    values: dict[str, float] = {}
    errors: list[FieldError] = []
    for slot, (_metric_id, field, scale) in enumerate(METRICS):
        metric = request.metrics[slot]
        if metric.nvmlReturn == pynvml.NVML_SUCCESS and math.isfinite(metric.value):
            values[field] = float(metric.value) * scale
            continue
        kind = (
            NvmlErrorKind.NOT_SUPPORTED
            if metric.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED
            else NvmlErrorKind.OTHER
        )
        errors.append(FieldError(field=f"gpm_{field}", kind=kind))
    return ProfilingReading.of(values, interval_s=later.taken_at - earlier.taken_at, errors=errors)


def free(raw: object) -> None:
    """Free a GPM sample; never raises (a sample of a lost GPU is host memory all the same)."""
    with contextlib.suppress(pynvml.NVMLError):
        pynvml.nvmlGpmSampleFree(raw)
