"""Per-RerankerDeployment state metrics, read from the indexes at scrape time.

What kube-state-metrics would export with a custom-resource config, here without one: replicas
desired, existing, ready and available, each condition's status (1 for the status it has, 0 for
the other two), OOM restarts, the time of the last scale, and the batching settings its pods
run at per GPU model (status.calibration). Absent, never zero, where the
resource does not say (no Deployment seen yet, never scaled, a spec that does not parse).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kuberank_operator.model.observations import ChildSummary, parse_count, parse_time
from kuberank_operator.model.resources import ResourceView

PREFIX = "kuberank_operator_rerankerdeployment"
LABELS = ("namespace", "rerankerdeployment")
CONDITION_STATUSES = ("True", "False", "Unknown")


@dataclass(frozen=True)
class WatchedResource:
    """One RerankerDeployment as the indexes hold it, and its Deployment if one was seen."""

    view: ResourceView
    deployment: ChildSummary | None = None


def _count(status: Mapping[str, Any], name: str) -> int | None:
    return parse_count(status[name]) if name in status else None


class ResourceStateCollector(Collector):
    """Yields the state families of every RerankerDeployment `read` returns."""

    def __init__(self, read: Callable[[], Iterable[WatchedResource]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        labels = list(LABELS)
        desired = GaugeMetricFamily(
            f"{PREFIX}_spec_replicas",
            "Replicas the RerankerDeployment asks for (spec.replicas, as the autoscaler or a "
            "person set it). Absent while the spec cannot be parsed.",
            labels=labels,
        )
        current = GaugeMetricFamily(
            f"{PREFIX}_status_replicas",
            "Inference pods of the RerankerDeployment that exist (status.replicas).",
            labels=labels,
        )
        ready = GaugeMetricFamily(
            f"{PREFIX}_status_replicas_ready",
            "Inference pods whose server reports ready (status.readyReplicas).",
            labels=labels,
        )
        available = GaugeMetricFamily(
            f"{PREFIX}_status_replicas_available",
            "Pods of its Deployment available for minReadySeconds (the Deployment's "
            "status.availableReplicas). Absent until the operator has seen the Deployment.",
            labels=labels,
        )
        condition = GaugeMetricFamily(
            f"{PREFIX}_condition",
            "1 for the status (True, False, Unknown) each condition of status.conditions has, 0 "
            "for the other two, as kube-state-metrics exports conditions.",
            labels=[*labels, "condition", "status"],
        )
        restarts = CounterMetricFamily(
            f"{PREFIX}_oom_restarts",
            "Pods the operator restarted after out-of-memory errors or a stuck GPU "
            "(status.oom.restarts). Absent before the first restart.",
            labels=labels,
        )
        last_scale = GaugeMetricFamily(
            f"{PREFIX}_last_scale_timestamp_seconds",
            "When the operator last changed the replicas (status.lastScale.time), in unix "
            "seconds. Absent before the first change.",
            labels=labels,
        )
        calibration_labels = [*labels, "gpu_model", "state"]
        calibrated_tokens = GaugeMetricFamily(
            f"{PREFIX}_calibrated_max_batch_tokens",
            "Token budget per batch the pods of a GPU model run at (status.calibration: the "
            "inference servers' start-up calibration, or spec.batching as given), by GPU model "
            "and calibration state; one series per setting when pods differ.",
            labels=[*calibration_labels, "batches_in_flight"],
        )
        calibrated_pods = GaugeMetricFamily(
            f"{PREFIX}_calibrated_pods",
            "Pods running each setting of status.calibration, by GPU model, state, token "
            "budget and batches in flight.",
            labels=[*calibration_labels, "max_batch_tokens", "batches_in_flight"],
        )
        calibrated_rate = GaugeMetricFamily(
            f"{PREFIX}_calibrated_pairs_per_second",
            "Median pairs/s the pods measured at their setting during start-up calibration "
            "(status.calibration; model only, no HTTP), by GPU model, state, token budget and "
            "batches in flight. Absent where nothing was measured.",
            labels=[*calibration_labels, "max_batch_tokens", "batches_in_flight"],
        )
        for state in sorted(self._read(), key=lambda s: s.view.key):
            view = state.view
            key = list(view.key)
            status = view.status
            if view.spec is not None:
                desired.add_metric(key, view.spec.replicas)
            for family, field in ((current, "replicas"), (ready, "readyReplicas")):
                value = _count(status, field)
                if value is not None:
                    family.add_metric(key, value)
            if state.deployment is not None:
                available.add_metric(key, state.deployment.available_replicas)
            for cond in status.get("conditions") or []:
                kind, has = str(cond.get("type", "")), str(cond.get("status", "Unknown"))
                for option in CONDITION_STATUSES:
                    condition.add_metric([*key, kind, option], 1.0 if has == option else 0.0)
            oom = status.get("oom") or {}
            if "restarts" in oom:
                restarts.add_metric(key, parse_count(oom["restarts"]))
            scaled_at = parse_time((status.get("lastScale") or {}).get("time"))
            if scaled_at is not None:
                last_scale.add_metric(key, scaled_at)
            for entry in status.get("calibration") or []:
                _add_calibration(
                    entry,
                    key,
                    tokens=calibrated_tokens,
                    pods=calibrated_pods,
                    rate=calibrated_rate,
                )
        yield from (desired, current, ready, available, condition, restarts, last_scale)
        yield from (calibrated_tokens, calibrated_pods, calibrated_rate)


def _add_calibration(
    entry: object,
    key: list[str],
    *,
    tokens: GaugeMetricFamily,
    pods: GaugeMetricFamily,
    rate: GaugeMetricFamily,
) -> None:
    """One status.calibration entry as series (an entry that is not a mapping is skipped)."""
    if not isinstance(entry, Mapping):
        return
    where = [*key, str(entry.get("gpuModel", "")), str(entry.get("state", ""))]
    budget, depth = entry.get("maxBatchTokens"), entry.get("batchesInFlight")
    if not isinstance(budget, int) or not isinstance(depth, int):
        return
    tokens.add_metric([*where, str(depth)], budget)
    setting = [*where, str(budget), str(depth)]
    pods.add_metric(setting, parse_count(entry.get("pods", 0)))
    measured = entry.get("pairsPerSecond")
    if isinstance(measured, int | float):
        rate.add_metric(setting, float(measured))
