"""Signals from real Prometheus text exposition (as prometheus_client and the sidecar write it)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kuberank_operator.model.signals import (
    GpuReading,
    InferenceReading,
    MetricsFormatError,
    PodScrape,
    fleet_signals,
    histogram_quantile,
    parse_inference_metrics,
    parse_sidecar_metrics,
    pod_signals,
)

BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0)


class InferenceMetrics:
    """The inference server's operator-facing metrics, written by prometheus_client."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue = Gauge("kuberank_inference_queue_depth", "q", registry=self.registry)
        self.ready = Gauge("kuberank_inference_ready", "r", registry=self.registry)
        self.duration = Histogram(
            "kuberank_inference_request_duration_seconds",
            "d",
            ["endpoint"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.oom = Counter("kuberank_cuda_oom_total", "o", registry=self.registry)
        self.pairs = Counter("kuberank_inference_pairs_total", "p", registry=self.registry)
        self.budget = Gauge("kuberank_inference_token_budget", "b", registry=self.registry)
        self.tokens = Gauge("kuberank_inference_queue_tokens", "t", registry=self.registry)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_parse_inference_metrics_reads_every_operator_metric() -> None:
    m = InferenceMetrics()
    m.queue.set(7)
    m.ready.set(1)
    m.oom.inc(2)
    m.pairs.inc(40)
    m.budget.set(8192)
    m.duration.labels("rerank").observe(0.03)
    m.duration.labels("embed").observe(0.7)
    reading = parse_inference_metrics(m.text())
    assert reading.queue_depth == 7
    assert reading.ready is True
    assert reading.cuda_oom_total == 2
    assert reading.pairs_total == 40
    assert reading.token_budget == 8192
    # Buckets are summed over endpoints and cumulative.
    assert dict(reading.latency_buckets) == {
        0.01: 0,
        0.05: 1,
        0.1: 1,
        0.5: 1,
        1.0: 2,
        math.inf: 2,
    }


def test_absent_metrics_are_unknown_not_zero() -> None:
    reading = parse_inference_metrics("# nothing here\n")
    assert reading.queue_depth is None
    assert reading.ready is None
    assert reading.cuda_oom_total is None
    gpu = parse_sidecar_metrics("")
    assert gpu == GpuReading(None, None, None, None)


def test_garbage_is_a_format_error() -> None:
    with pytest.raises(MetricsFormatError):
        parse_inference_metrics("kuberank_inference_queue_depth{ not exposition\n")


SIDECAR_TEXT = """\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",device="nvidia0",modelName="H100",Hostname="n1"} 90
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",device="nvidia1",modelName="H100",Hostname="n1"} 70
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a"} 70000
# HELP DCGM_FI_DEV_FB_FREE Framebuffer memory free (in MiB).
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-a"} 10000
# HELP DCGM_FI_DEV_XID_ERRORS Value of the last XID error encountered.
# TYPE DCGM_FI_DEV_XID_ERRORS gauge
DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-a"} 79
"""


def test_parse_sidecar_metrics_averages_devices() -> None:
    gpu = parse_sidecar_metrics(SIDECAR_TEXT)
    assert gpu.utilization_percent == 80
    assert gpu.fb_used_mib == 70000
    assert gpu.fb_free_mib == 10000
    assert gpu.last_xid == 79


def test_graphics_engine_activity_stands_in_on_mig() -> None:
    text = (
        "# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge\n"
        'DCGM_FI_PROF_GR_ENGINE_ACTIVE{GPU_I_ID="7"} 0.25\n'
    )
    assert parse_sidecar_metrics(text).utilization_percent == 25


@pytest.mark.parametrize(
    ("quantile", "expected"),
    [
        (0.5, 0.075),  # rank 5 of 10: halfway through (0.05, 0.1]
        (0.99, 1.0),  # rank 9.9: falls in +Inf, reported as the highest finite bound
        (0.1, 0.01),  # rank 1: the top of the first bucket
    ],
)
def test_histogram_quantile_interpolates_like_prometheus(quantile: float, expected: float) -> None:
    buckets = [(0.01, 1), (0.05, 4), (0.1, 6), (0.5, 8), (1.0, 9), (math.inf, 10)]
    assert histogram_quantile(quantile, buckets) == pytest.approx(expected)


def test_histogram_quantile_without_observations_is_none() -> None:
    assert histogram_quantile(0.99, [(0.1, 0), (math.inf, 0)]) is None
    assert histogram_quantile(0.99, []) is None


def _scrape(
    at: float, *, oom: float = 0, buckets: dict[float, float] | None = None, queue: float = 0
) -> PodScrape:
    cumulative = buckets or {0.1: 0, math.inf: 0}
    return PodScrape(
        pod="p",
        taken_at=at,
        inference=InferenceReading(
            queue_depth=queue,
            pairs_in_flight=0,
            ready=True,
            latency_buckets=tuple(sorted(cumulative.items())),
            cuda_oom_total=oom,
            pairs_total=0,
            token_budget=16384,
        ),
        gpu=GpuReading(utilization_percent=50, fb_used_mib=76000, fb_free_mib=4000, last_xid=None),
    )


def test_p99_is_taken_over_the_window_not_since_start() -> None:
    history = [
        _scrape(0, buckets={0.1: 0, 1.0: 100, math.inf: 100}),  # slow, but before the window
        _scrape(50, buckets={0.1: 0, 1.0: 100, math.inf: 100}),
        _scrape(60, buckets={0.1: 50, 1.0: 150, math.inf: 150}),
    ]
    signals = pod_signals(history, now=60, window_s=15, vram_safety_margin=0.1)
    # Only the 50 fast requests between t=50 and t=60 count.
    assert signals.p99_latency_ms == pytest.approx(99.0)
    assert signals.vram_used_fraction == pytest.approx(0.95)
    assert signals.vram_over_margin is True


def test_one_scrape_gives_no_rate() -> None:
    signals = pod_signals([_scrape(0, oom=5)], now=0, window_s=60, vram_safety_margin=0.1)
    assert signals.p99_latency_ms is None
    assert signals.cuda_ooms_in_window is None


def test_ooms_are_counted_inside_the_window() -> None:
    history = [_scrape(0, oom=1), _scrape(100, oom=1), _scrape(110, oom=3), _scrape(120, oom=4)]
    signals = pod_signals(history, now=120, window_s=30, vram_safety_margin=0.1)
    assert signals.cuda_ooms_in_window == 3


def test_ooms_of_a_pod_started_inside_the_window_count_from_zero() -> None:
    history = [_scrape(100, oom=2)]
    signals = pod_signals(history, now=100, window_s=60, vram_safety_margin=0.1, started_at=90)
    assert signals.cuda_ooms_in_window == 2


def test_a_counter_reset_counts_the_new_value() -> None:
    history = [_scrape(0, oom=9), _scrape(10, oom=2)]
    signals = pod_signals(history, now=10, window_s=60, vram_safety_margin=0.1)
    assert signals.cuda_ooms_in_window == 2


def test_fleet_p99_uses_summed_buckets_and_completeness_needs_every_pod() -> None:
    fast = pod_signals(
        [
            _scrape(0, buckets={0.1: 0, 1.0: 0, math.inf: 0}),
            _scrape(10, buckets={0.1: 99, 1.0: 99, math.inf: 99}),
        ],
        now=10,
        window_s=60,
        vram_safety_margin=0.1,
    )
    slow = pod_signals(
        [
            _scrape(0, buckets={0.1: 0, 1.0: 0, math.inf: 0}),
            _scrape(10, buckets={0.1: 0, 1.0: 1, math.inf: 1}, queue=4),
        ],
        now=10,
        window_s=60,
        vram_safety_margin=0.1,
    )
    fleet = fleet_signals([fast, slow], pods_expected=2)
    assert fleet.mean_queue_depth == 2
    assert fleet.complete
    # 100 requests, 99 under 100 ms: p99 is at the top of the first bucket.
    assert fleet.p99_latency_ms == pytest.approx(100.0)
    assert not fleet_signals([fast], pods_expected=2).complete


def test_queued_tokens_are_read_and_absent_ones_are_unknown() -> None:
    m = InferenceMetrics()
    m.tokens.set(12_288)
    assert parse_inference_metrics(m.text()).queue_tokens == 12_288
    # A server older than the series: unknown, never zero.
    assert parse_inference_metrics("kuberank_inference_queue_depth 3\n").queue_tokens is None


def test_fleet_queued_tokens_are_the_mean_of_the_pods_that_report_them() -> None:
    def one(pod: str, queued: float | None) -> PodScrape:
        scrape = _scrape(0)
        assert scrape.inference is not None
        reading = dataclasses.replace(scrape.inference, queue_tokens=queued)
        return dataclasses.replace(scrape, pod=pod, inference=reading)

    pods = [
        pod_signals([one(name, queued)], now=0, window_s=60, vram_safety_margin=0.1)
        for name, queued in (("a", 1000.0), ("b", 3000.0), ("c", None))
    ]
    assert [p.queue_tokens for p in pods] == [1000, 3000, None]
    assert fleet_signals(pods, pods_expected=3).mean_queue_tokens == 2000
    assert fleet_signals(pods[2:], pods_expected=1).mean_queue_tokens is None
