"""The server's Prometheus metrics, in a registry of their own (one per app, so tests can run
several). Names the operator reads are fixed by the team contract; see docs/inference.md."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kuberank_inference.engine.calibration import CalibrationReport
from kuberank_inference.engine.contracts import DeviceMemory
from kuberank_inference.quality import PrecisionReport

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
_RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


class _DeviceMemoryCollector(Collector):
    """Reads accelerator memory at scrape time, never in the request path."""

    def __init__(self, read: Callable[[], DeviceMemory | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        memory = self._read()
        family = GaugeMetricFamily(
            "kuberank_inference_device_memory_bytes",
            "Accelerator memory seen by the model framework, by kind: total (device size), "
            "allocated and reserved (now), peak_allocated (since start). Absent on CPU.",
            labels=["kind"],
        )
        if memory is not None:
            family.add_metric(["total"], memory.total)
            family.add_metric(["allocated"], memory.allocated)
            family.add_metric(["reserved"], memory.reserved)
            family.add_metric(["peak_allocated"], memory.peak_allocated)
        yield family


class _BudgetCollector(Collector):
    """The token budget planned at start-up and why, and the free device memory it saw."""

    def __init__(self) -> None:
        self.ceiling: int | None = None
        self.reason: str | None = None
        self.free_bytes: int | None = None

    def collect(self) -> Iterator[Metric]:
        ceiling = GaugeMetricFamily(
            "kuberank_inference_token_budget_ceiling",
            "Token budget in force since start-up: --max-batch-tokens, capped by the memory "
            "free to this process, halved while the warm-up ran out of memory; the effective "
            "budget (kuberank_inference_token_budget) returns to it after an OOM.",
        )
        reason = GaugeMetricFamily(
            "kuberank_inference_token_budget_reason",
            "1 for why the budget in force is what it is: configured, device_memory (the "
            "share under --vram-safety-margin), free_memory (other processes hold the rest), "
            "warm_up_oom (lowered after the warm-up ran out of memory), calibrated (chosen by "
            "the start-up calibration from what fitted).",
            labels=["reason"],
        )
        free = GaugeMetricFamily(
            "kuberank_inference_device_free_at_start_bytes",
            "Device memory free to this process at start-up, with its weights loaded (other "
            "processes count against it); the budget was planned from it. Absent on CPU.",
        )
        if self.ceiling is not None:
            ceiling.add_metric([], self.ceiling)
        if self.reason is not None:
            reason.add_metric([self.reason], 1)
        if self.free_bytes is not None:
            free.add_metric([], self.free_bytes)
        yield from (ceiling, reason, free)


class _CalibrationCollector(Collector):
    """The setting chosen at start-up by the calibration, its measured rate and the curve."""

    def __init__(self) -> None:
        self.report: CalibrationReport | None = None

    def collect(self) -> Iterator[Metric]:
        report = self.report
        tokens = GaugeMetricFamily(
            "kuberank_inference_calibrated_max_batch_tokens",
            "Token budget per batch the server runs with since start-up: chosen by the "
            "calibration, or --max-batch-tokens (capped by device memory) when it did not run; "
            "see kuberank_inference_calibration_info for which.",
        )
        depth = GaugeMetricFamily(
            "kuberank_inference_calibrated_batches_in_flight",
            "Batches in flight the server runs with since start-up: chosen by the calibration, "
            "or --batches-in-flight when it did not run.",
        )
        rate = GaugeMetricFamily(
            "kuberank_inference_calibrated_pairs_per_second",
            "Pairs per second the calibration measured at the chosen setting on its synthetic "
            "DESIGN-shaped workload (model only, no HTTP). Absent when it did not measure.",
        )
        curve = GaugeMetricFamily(
            "kuberank_inference_calibration_pairs_per_second",
            "Pairs per second the calibration measured at each setting it tried, by token "
            "budget and batches in flight (settings not measured are absent).",
            labels=["max_batch_tokens", "batches_in_flight"],
        )
        info = GaugeMetricFamily(
            "kuberank_inference_calibration_info",
            "1, labelled with the calibration's state (calibrated, fixed: both flags given, "
            "off, nothing_measured) and the device's product name it ran on (cpu on CPU).",
            labels=["state", "device_name"],
        )
        if report is not None:
            setting = report.choice.setting
            tokens.add_metric([], setting.max_batch_tokens)
            depth.add_metric([], setting.batches_in_flight)
            if report.choice.pairs_per_second is not None:
                rate.add_metric([], report.choice.pairs_per_second)
            for point in report.curve:
                if point.pairs_per_second is not None:
                    curve.add_metric(
                        [str(point.setting.max_batch_tokens), str(point.setting.batches_in_flight)],
                        point.pairs_per_second,
                    )
            info.add_metric([report.state, report.device_name], 1)
        yield from (tokens, depth, rate, curve, info)


class _PrecisionCollector(Collector):
    """The precision asked for and served (dtype fp8 and its quality gate)."""

    def __init__(self) -> None:
        self.report: PrecisionReport | None = None

    def collect(self) -> Iterator[Metric]:
        precision = GaugeMetricFamily(
            "kuberank_inference_precision",
            "1 for the precision in force: requested (--dtype as resolved), served (what runs: "
            "fp8 only where it was requested and kept), state (not_requested; active; "
            "refused_device: the GPU has no FP8 (compute capability below 8.9) or is a CPU; "
            "refused_model: the model's layers cannot run in FP8; refused_gate: the quality gate "
            "found FP8 ranking unlike bfloat16; failed: the FP8 kernels failed at start-up).",
            labels=["requested", "served", "state"],
        )
        agreement = GaugeMetricFamily(
            "kuberank_inference_fp8_gate_agreement",
            "dtype fp8: the start-up quality gate's ranking agreement of FP8 with bfloat16 on "
            "its fixed calibration set, by measure (mean_spearman, min_spearman, "
            "mean_top_k_overlap, min_top_k_overlap, over its queries); absent when the gate did "
            "not run.",
            labels=["measure"],
        )
        report = self.report
        if report is not None:
            precision.add_metric([report.requested, report.served, report.state], 1)
            measured = report.agreement
            if measured is not None:
                agreement.add_metric(["mean_spearman"], measured.mean_spearman)
                agreement.add_metric(["min_spearman"], measured.min_spearman)
                agreement.add_metric(["mean_top_k_overlap"], measured.mean_top_k_overlap)
                agreement.add_metric(["min_top_k_overlap"], measured.min_top_k_overlap)
        yield from (precision, agreement)


class InferenceMetrics:
    def __init__(self) -> None:
        # *_created samples double the series count and nobody reads them
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "kuberank_inference_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "kuberank_inference_request_duration_seconds",
            "Time from receiving a request to sending its answer, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "kuberank_inference_queue_duration_seconds",
            "Time a request's sequences waited for their first batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokenization_duration = Histogram(
            "kuberank_inference_tokenization_duration_seconds",
            "Time to tokenize one request (on the tokenizer processes or threads, waiting for "
            "one included).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "kuberank_inference_inference_duration_seconds",
            "Time one batch spent on the model, from launch to results read back.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "kuberank_inference_queue_depth",
            "Sequences (query-document pairs or texts) waiting for a batch.",
            registry=r,
        )
        self.queue_tokens = Gauge(
            "kuberank_inference_queue_tokens",
            "Real tokens of the sequences waiting for a batch: the work queued, in the unit "
            "the token budget batches by.",
            registry=r,
        )
        self.running_tokens = Gauge(
            "kuberank_inference_running_tokens",
            "Real tokens of the batches launched and not yet read back (the work running).",
            registry=r,
        )
        self.pairs_in_flight = Gauge(
            "kuberank_inference_pairs_in_flight",
            "Sequences admitted and not yet answered (tokenizing, waiting or running); "
            "requests that would push this over --max-concurrent-pairs get 429.",
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "kuberank_inference_requests_in_flight",
            "Requests on the API routes being answered now; on SIGTERM the server waits for "
            "them (up to --shutdown-timeout) before it exits.",
            registry=r,
        )
        self.batch_size = Histogram(
            "kuberank_inference_batch_size",
            "Sequences (pairs or texts) per batch.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "kuberank_inference_batch_tokens",
            "Real (unpadded) tokens per batch.",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.padding_ratio = Histogram(
            "kuberank_inference_padding_ratio",
            "Fraction of a batch's processed token slots that were padding (0 when padding-free).",
            buckets=_RATIO_BUCKETS,
            registry=r,
        )
        self.cuda_oom = Counter(
            "kuberank_cuda_oom",
            "CUDA out-of-memory errors met by the batch worker (each was split and retried).",
            registry=r,
        )
        self.pairs = Counter(
            "kuberank_inference_pairs",
            "Sequences (query-document pairs or texts) the model has processed.",
            registry=r,
        )
        self.dropped_pairs = Counter(
            "kuberank_inference_dropped_pairs",
            "Waiting sequences dropped because their client disconnected.",
            registry=r,
        )
        self.token_budget = Gauge(
            "kuberank_inference_token_budget",
            "Effective maximum tokens per batch: --max-batch-tokens, capped by device memory, "
            "lowered for a while after a CUDA out-of-memory error.",
            registry=r,
        )
        self.ready = Gauge(
            "kuberank_inference_ready",
            "1 when the model is loaded, warmed up and the server is not shutting down.",
            registry=r,
        )

        self._budget = _BudgetCollector()
        r.register(self._budget)
        self._calibration = _CalibrationCollector()
        r.register(self._calibration)
        self._precision = _PrecisionCollector()
        r.register(self._precision)

    def record_calibration(self, report: CalibrationReport) -> None:
        self._calibration.report = report

    def record_precision(self, report: PrecisionReport) -> None:
        self._precision.report = report

    def record_budget(self, *, ceiling: int, reason: str, free_bytes: int | None) -> None:
        self._budget.ceiling, self._budget.reason = ceiling, reason
        self._budget.free_bytes = free_bytes

    def watch_device_memory(self, read: Callable[[], DeviceMemory | None]) -> None:
        self.registry.register(_DeviceMemoryCollector(read))
