"""Per-pod and per-deployment signals from the two /metrics endpoints of each inference pod.

The inference container (port 8080) and the GPU sidecar (port 9400) expose Prometheus text.
One scrape gives a `PodScrape`; signals that need a rate (p99 latency from histogram buckets,
CUDA out-of-memory events in a window) come from the difference of two scrapes, as Prometheus
computes them with `rate()` and `increase()`. Everything here is pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from kuberank_operator.model import naming

INFERENCE_METRICS_PORT = naming.INFERENCE_PORT
SIDECAR_METRICS_PORT = naming.SIDECAR_PORT

QUEUE_DEPTH = "kuberank_inference_queue_depth"
QUEUE_TOKENS = "kuberank_inference_queue_tokens"
PAIRS_IN_FLIGHT = "kuberank_inference_pairs_in_flight"
REQUEST_DURATION_BUCKET = "kuberank_inference_request_duration_seconds_bucket"
PAIRS_TOTAL = "kuberank_inference_pairs_total"
CUDA_OOM_TOTAL = "kuberank_cuda_oom_total"
TOKEN_BUDGET = "kuberank_inference_token_budget"
TOKEN_BUDGET_CEILING = "kuberank_inference_token_budget_ceiling"
READY = "kuberank_inference_ready"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
TUNING_STATE = "kuberank_gpu_tuning_state"
CALIBRATED_MAX_BATCH_TOKENS = "kuberank_inference_calibrated_max_batch_tokens"
CALIBRATED_BATCHES_IN_FLIGHT = "kuberank_inference_calibrated_batches_in_flight"
CALIBRATED_PAIRS_PER_SECOND = "kuberank_inference_calibrated_pairs_per_second"
CALIBRATION_INFO = "kuberank_inference_calibration_info"
_CALIBRATION_SERIES = frozenset(
    {CALIBRATED_MAX_BATCH_TOKENS, CALIBRATED_BATCHES_IN_FLIGHT, CALIBRATED_PAIRS_PER_SECOND}
)
# A pod's tuning state is the worst of its GPUs', in the sidecar's own order (tuning._overall).
TUNING_SEVERITY = ("failed", "denied", "refused", "pending", "applied", "restored", "disabled")
_INFERENCE_GAUGES = frozenset(
    {
        QUEUE_DEPTH,
        QUEUE_TOKENS,
        PAIRS_IN_FLIGHT,
        CUDA_OOM_TOTAL,
        PAIRS_TOTAL,
        TOKEN_BUDGET,
        TOKEN_BUDGET_CEILING,
        READY,
    }
)


class MetricsFormatError(ValueError):
    """A /metrics body that is not Prometheus text exposition."""


@dataclass(frozen=True)
class PodCalibration:
    """The batching setting a pod runs with since start-up, as its calibration reports it."""

    max_batch_tokens: int
    batches_in_flight: int
    state: str  # calibrated, fixed, off, nothing_measured
    device_name: str  # the inference server's device product name (cpu on CPU)
    pairs_per_second: float | None = None


@dataclass(frozen=True)
class InferenceReading:
    """What the inference container's /metrics showed at one instant."""

    queue_depth: float | None
    pairs_in_flight: float | None
    ready: bool | None
    # (upper bound in seconds, cumulative count), summed over endpoints, sorted by bound.
    latency_buckets: tuple[tuple[float, float], ...]
    cuda_oom_total: float | None
    pairs_total: float | None
    token_budget: float | None
    # Absent from servers older than the series (None: unknown).
    queue_tokens: float | None = None
    token_budget_ceiling: float | None = None
    calibration: PodCalibration | None = None


@dataclass(frozen=True)
class GpuReading:
    """What the GPU sidecar's /metrics showed at one instant, over the pod's devices."""

    utilization_percent: float | None
    fb_used_mib: float | None
    fb_free_mib: float | None
    last_xid: int | None
    # The GPU's product name (dcgm-exporter's modelName label), when a series carries it.
    model_name: str | None = None


@dataclass(frozen=True)
class PodTuning:
    """A pod's GPU tuning as its sidecar reports it: the worst state over its GPUs."""

    state: str  # one of TUNING_SEVERITY
    reason: str = ""  # the sidecar's short code (no_permission, shared_gpu, ...), may be empty
    gpus: int = 1  # how many of the pod's GPUs are in that state


@dataclass(frozen=True)
class PodScrape:
    """One scrape of one pod; a reading is None when its endpoint could not be read."""

    pod: str
    taken_at: float
    inference: InferenceReading | None
    gpu: GpuReading | None


@dataclass(frozen=True)
class PodSignals:
    """The signals of one pod that decisions use; None means unknown, never zero."""

    pod: str
    queue_depth: float | None
    p99_latency_ms: float | None
    # Requests per latency bucket finished in the window, so a fleet p99 can be computed.
    latency_deltas: tuple[tuple[float, float], ...]
    gpu_utilization: float | None
    vram_used_fraction: float | None
    vram_over_margin: bool | None
    cuda_ooms_in_window: float | None
    last_xid: int | None
    ready: bool | None
    pairs_total: float | None
    token_budget: float | None
    queue_tokens: float | None = None
    token_budget_ceiling: float | None = None


@dataclass(frozen=True)
class FleetSignals:
    """Signals over all pods of one RerankerDeployment."""

    pods_expected: int
    pods: tuple[PodSignals, ...]
    mean_queue_depth: float | None
    p99_latency_ms: float | None
    mean_gpu_utilization: float | None
    # Every expected pod reported queue depth and GPU utilization: only then may it scale down.
    complete: bool
    mean_queue_tokens: float | None = None


def _samples(text: str) -> Iterable[tuple[str, Mapping[str, str], float]]:
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                yield sample.name, sample.labels, float(sample.value)
    except (ValueError, IndexError, TypeError) as exc:
        raise MetricsFormatError(f"not Prometheus text exposition: {exc}") from exc


def _finite(value: float) -> bool:
    return not math.isnan(value) and not math.isinf(value)


def parse_inference_metrics(text: str) -> InferenceReading:
    """Read the inference server's metrics; absent series stay None."""
    sums: dict[str, float] = {}
    buckets: dict[float, float] = {}
    calibration: dict[str, float | str] = {}
    for name, labels, value in _samples(text):
        if not _finite(value) and name != REQUEST_DURATION_BUCKET:
            continue
        if name in _CALIBRATION_SERIES:
            calibration[name] = value
        elif name == CALIBRATION_INFO and value >= 1.0:
            calibration["state"] = labels.get("state", "")
            calibration["device_name"] = labels.get("device_name", "")
        if name == REQUEST_DURATION_BUCKET:
            bound = float(labels.get("le", "nan"))
            if math.isnan(bound) or math.isnan(value):
                continue
            buckets[bound] = buckets.get(bound, 0.0) + value
        elif name in _INFERENCE_GAUGES:
            sums[name] = sums.get(name, 0.0) + value
    ready = sums.get(READY)
    return InferenceReading(
        queue_depth=sums.get(QUEUE_DEPTH),
        pairs_in_flight=sums.get(PAIRS_IN_FLIGHT),
        ready=None if ready is None else ready >= 1.0,
        latency_buckets=tuple(sorted(buckets.items())),
        cuda_oom_total=sums.get(CUDA_OOM_TOTAL),
        pairs_total=sums.get(PAIRS_TOTAL),
        token_budget=sums.get(TOKEN_BUDGET),
        queue_tokens=sums.get(QUEUE_TOKENS),
        token_budget_ceiling=sums.get(TOKEN_BUDGET_CEILING),
        calibration=_calibration(calibration),
    )


def _calibration(series: Mapping[str, float | str]) -> PodCalibration | None:
    """The calibration series of one scrape; None from a server that exports none."""
    tokens = series.get(CALIBRATED_MAX_BATCH_TOKENS)
    depth = series.get(CALIBRATED_BATCHES_IN_FLIGHT)
    if not isinstance(tokens, float) or not isinstance(depth, float):
        return None
    rate = series.get(CALIBRATED_PAIRS_PER_SECOND)
    return PodCalibration(
        max_batch_tokens=int(tokens),
        batches_in_flight=int(depth),
        state=str(series.get("state", "")),
        device_name=str(series.get("device_name", "")),
        pairs_per_second=rate if isinstance(rate, float) else None,
    )


def parse_sidecar_metrics(text: str) -> GpuReading:
    """Read the sidecar's dcgm-exporter-compatible metrics, averaged over the pod's devices.

    GPU utilization falls back to graphics-engine activity (a 0..1 ratio) where the driver
    gives no utilization, as on MIG devices.
    """
    util: list[float] = []
    engine: list[float] = []
    used: list[float] = []
    free: list[float] = []
    xids: list[int] = []
    model_name: str | None = None
    for name, labels, value in _samples(text):
        if not _finite(value):
            continue
        if model_name is None and labels.get("modelName"):
            model_name = labels["modelName"]
        if name == GPU_UTIL:
            util.append(value)
        elif name == GR_ENGINE_ACTIVE:
            engine.append(value * 100.0)
        elif name == FB_USED:
            used.append(value)
        elif name == FB_FREE:
            free.append(value)
        elif name == XID_ERRORS and value > 0:
            xids.append(int(value))
    busy = util or engine
    return GpuReading(
        utilization_percent=sum(busy) / len(busy) if busy else None,
        fb_used_mib=sum(used) if used else None,
        fb_free_mib=sum(free) if free else None,
        last_xid=max(xids) if xids else None,
        model_name=model_name,
    )


def parse_tuning_state(text: str) -> PodTuning | None:
    """The pod's tuning state from the sidecar's `kuberank_gpu_tuning_state` series.

    None when the sidecar exports no such series yet (its devices are not known). States the
    operator does not know rank as failed, so a newer sidecar never reads as applied.
    """
    found: list[tuple[int, str, str]] = []
    for name, labels, value in _samples(text):
        if name != TUNING_STATE or value < 1.0:
            continue
        state = labels.get("state", "")
        rank = TUNING_SEVERITY.index(state) if state in TUNING_SEVERITY else 0
        found.append((rank, state or "failed", labels.get("reason", "")))
    if not found:
        return None
    worst = min(found)
    same = sum(1 for rank, _, _ in found if rank == worst[0])
    return PodTuning(state=worst[1], reason=worst[2], gpus=same)


def histogram_quantile(quantile: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The quantile of cumulative buckets, interpolated as Prometheus' histogram_quantile does.

    Returns None without observations; a quantile in the +Inf bucket is the highest finite bound.
    """
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return None


def _bucket_deltas(
    old: Sequence[tuple[float, float]], new: Sequence[tuple[float, float]]
) -> tuple[tuple[float, float], ...]:
    before = dict(old)
    if any(count < before.get(bound, 0.0) for bound, count in new):
        # A counter went down: the server restarted, so everything it shows is new.
        return tuple(new)
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in new)


def _window_start(history: Sequence[PodScrape], *, now: float, window_s: float) -> int | None:
    """Index of the oldest scrape inside the window with inference data, if not the newest."""
    inside = [
        i
        for i, scrape in enumerate(history)
        if scrape.inference is not None and scrape.taken_at >= now - window_s
    ]
    if len(inside) < 2:
        return None
    return inside[0]


def pod_signals(
    history: Sequence[PodScrape],
    *,
    now: float,
    window_s: float,
    vram_safety_margin: float,
    started_at: float | None = None,
) -> PodSignals:
    """The signals of one pod from its scrapes, oldest first.

    Rates use the oldest scrape inside `window_s` as the baseline. A pod that started inside the
    window counts its CUDA OOMs from zero, so OOMs before the first scrape are not lost.
    """
    if not history:
        raise ValueError("pod_signals needs at least one scrape")
    pod = history[-1].pod
    latest = history[-1]
    inference = latest.inference
    gpu = latest.gpu
    start = _window_start(history, now=now, window_s=window_s)
    deltas: tuple[tuple[float, float], ...] = ()
    ooms: float | None = None
    if inference is not None and inference.cuda_oom_total is not None:
        if started_at is not None and started_at >= now - window_s:
            ooms = inference.cuda_oom_total
        elif start is not None:
            base = history[start].inference
            assert base is not None
            before = base.cuda_oom_total or 0.0
            now_total = inference.cuda_oom_total
            ooms = now_total if now_total < before else now_total - before
    if inference is not None and start is not None:
        base = history[start].inference
        assert base is not None
        deltas = _bucket_deltas(base.latency_buckets, inference.latency_buckets)
    p99 = histogram_quantile(0.99, deltas)
    used_fraction: float | None = None
    if gpu is not None and gpu.fb_used_mib is not None and gpu.fb_free_mib is not None:
        total = gpu.fb_used_mib + gpu.fb_free_mib
        used_fraction = gpu.fb_used_mib / total if total > 0 else None
    return PodSignals(
        pod=pod,
        queue_depth=inference.queue_depth if inference is not None else None,
        p99_latency_ms=None if p99 is None else p99 * 1000.0,
        latency_deltas=deltas,
        gpu_utilization=gpu.utilization_percent if gpu is not None else None,
        vram_used_fraction=used_fraction,
        vram_over_margin=None if used_fraction is None else used_fraction > 1 - vram_safety_margin,
        cuda_ooms_in_window=ooms,
        last_xid=gpu.last_xid if gpu is not None else None,
        ready=inference.ready if inference is not None else None,
        pairs_total=inference.pairs_total if inference is not None else None,
        token_budget=inference.token_budget if inference is not None else None,
        queue_tokens=inference.queue_tokens if inference is not None else None,
        token_budget_ceiling=inference.token_budget_ceiling if inference is not None else None,
    )


def fleet_signals(pods: Sequence[PodSignals], *, pods_expected: int) -> FleetSignals:
    """Combine pod signals; p99 is computed over the summed buckets, as PromQL `sum by (le)`."""
    queues = [p.queue_depth for p in pods if p.queue_depth is not None]
    tokens = [p.queue_tokens for p in pods if p.queue_tokens is not None]
    utils = [p.gpu_utilization for p in pods if p.gpu_utilization is not None]
    summed: dict[float, float] = {}
    for p in pods:
        for bound, count in p.latency_deltas:
            summed[bound] = summed.get(bound, 0.0) + count
    p99 = histogram_quantile(0.99, tuple(summed.items()))
    complete = (
        pods_expected > 0
        and len(pods) >= pods_expected
        and len(queues) >= pods_expected
        and len(utils) >= pods_expected
    )
    return FleetSignals(
        pods_expected=pods_expected,
        pods=tuple(pods),
        mean_queue_depth=sum(queues) / len(queues) if queues else None,
        p99_latency_ms=None if p99 is None else p99 * 1000.0,
        mean_gpu_utilization=sum(utils) / len(utils) if utils else None,
        complete=complete,
        mean_queue_tokens=sum(tokens) / len(tokens) if tokens else None,
    )
