"""The operator's own Prometheus metrics, served on --metrics-port at /metrics.

A registry of its own (not the process-global one) so tests and embedders start clean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "kuberank_operator_reconciles_total",
    "Reconciles of RerankerDeployments, by result: ok, gone (resource deleted) or error.",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "kuberank_operator_reconcile_duration_seconds",
    "Time one reconcile took, including API requests.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
APPLIES = Counter(
    "kuberank_operator_applies_total",
    "Server-side applies of owned objects, by kind and result (ok or error).",
    ["kind", "result"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "kuberank_operator_events_total",
    "Kubernetes Events posted on RerankerDeployments, by type and reason.",
    ["type", "reason"],
    registry=REGISTRY,
)

SCALE_DECISIONS = Counter(
    "kuberank_operator_scale_decisions_total",
    "Replica changes written through the scale subresource, by direction (up, down) and "
    "source (builtin: the operator's own evaluator; alert: an Alertmanager webhook).",
    ["direction", "source"],
    registry=REGISTRY,
)
POD_RESTARTS = Counter(
    "kuberank_operator_pod_restarts_total",
    "Inference pods deleted for a restart, by kind (cuda-oom, oom-killed, xid) and source.",
    ["kind", "source"],
    registry=REGISTRY,
)
RESTARTS_HELD = Counter(
    "kuberank_operator_restarts_held_back_total",
    "Wanted restarts not done, by cause (rate-limit: spec.oom.maxRestartsPerHour; budget: the "
    "disruption budget).",
    ["cause"],
    registry=REGISTRY,
)
EVALUATIONS = Histogram(
    "kuberank_operator_evaluation_duration_seconds",
    "One builtin evaluation of one RerankerDeployment: scraping its pods, deciding, acting.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
ALERTS = Counter(
    "kuberank_operator_alerts_total",
    "Firing kuberank alerts received on the Alertmanager webhook, by action and outcome "
    "(acted, unchanged, ignored, refused: outside --alert-webhook-namespaces, invalid: malformed, "
    "failed).",
    ["action", "outcome"],
    registry=REGISTRY,
)


class QueueCollector(Collector):
    """Work-queue gauges read at scrape time."""

    def __init__(self, read: Callable[[], tuple[int, int, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready, processing, scheduled = self._read()
        family = GaugeMetricFamily(
            "kuberank_operator_queue_keys",
            "RerankerDeployment keys in the work queue: ready (waiting for a worker), "
            "processing, or scheduled for a later look.",
            labels=["state"],
        )
        family.add_metric(["ready"], ready)
        family.add_metric(["processing"], processing)
        family.add_metric(["scheduled"], scheduled)
        yield family


class StateCollector(Collector):
    """How many RerankerDeployments are in each state, as their status says."""

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kuberank_operator_rerankerdeployments",
            "RerankerDeployments watched, by status.state (Ready, Progressing, Degraded, "
            "CapacityLimited, ScaledToZero; Unknown before the first status).",
            labels=["state"],
        )
        for state, count in sorted(self._read().items()):
            family.add_metric([state], count)
        yield family
