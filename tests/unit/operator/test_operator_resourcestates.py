"""Per-RerankerDeployment state metrics, from ResourceViews built from bodies, at scrape time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from kuberank_operator.model.indexes import Index, World, child_entry, rrd_entry
from kuberank_operator.model.resources import resource_view
from kuberank_operator.running import resource_states
from kuberank_operator.telemetry.resourcestates import ResourceStateCollector, WatchedResource
from tests.unit.operator.conftest import minimal_spec

SCALED_AT = "2026-12-01T10:30:00Z"


def body(name: str, *, spec: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kuberank.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"namespace": "search", "name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": minimal_spec(replicas=3) if spec is None else spec,
        "status": status,
    }


def deployment(owner: str, *, available: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "namespace": "search",
            "name": f"{owner}-inference",
            "generation": 1,
            "ownerReferences": [
                {
                    "apiVersion": "kuberank.dev/v1alpha1",
                    "kind": "RerankerDeployment",
                    "name": owner,
                    "uid": f"uid-{owner}",
                    "controller": True,
                }
            ],
        },
        "spec": {"replicas": 3},
        "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": available},
    }


FULL = body(
    "bge",
    replicas=3,
    readyReplicas=2,
    conditions=[
        {"type": "Ready", "status": "False", "reason": "PodsNotReady"},
        {"type": "Degraded", "status": "Unknown"},
    ],
    oom={"restarts": 4, "lastReason": "cuda-oom"},
    lastScale={"time": SCALED_AT, "from": 2, "to": 3, "reason": "queue depth"},
)


def registry_of(*resources: WatchedResource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ResourceStateCollector(lambda: resources))
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(
        f"kuberank_operator_rerankerdeployment_{name}",
        {"namespace": "search", "rerankerdeployment": "bge", **labels},
    )


def test_replicas_conditions_restarts_and_last_scale_of_one_resource() -> None:
    registry = registry_of(WatchedResource(resource_view(FULL)))
    assert value(registry, "spec_replicas") == 3
    assert value(registry, "status_replicas") == 3
    assert value(registry, "status_replicas_ready") == 2
    assert value(registry, "oom_restarts_total") == 4
    expected = datetime(2026, 12, 1, 10, 30, tzinfo=UTC).timestamp()
    assert value(registry, "last_scale_timestamp_seconds") == expected


def test_each_condition_is_one_for_its_status_and_zero_for_the_others() -> None:
    registry = registry_of(WatchedResource(resource_view(FULL)))
    ready = {
        s: value(registry, "condition", condition="Ready", status=s)
        for s in ("True", "False", "Unknown")
    }
    assert ready == {"True": 0, "False": 1, "Unknown": 0}
    assert value(registry, "condition", condition="Degraded", status="Unknown") == 1
    assert value(registry, "condition", condition="Degraded", status="True") == 0


def test_what_the_resource_does_not_say_is_absent_not_zero() -> None:
    fresh = body("bge", spec={"replicas": "many"})  # a spec that does not parse, no status yet
    registry = registry_of(WatchedResource(resource_view(fresh)))
    for name in (
        "spec_replicas",
        "status_replicas",
        "status_replicas_ready",
        "status_replicas_available",
        "oom_restarts_total",
        "last_scale_timestamp_seconds",
    ):
        assert value(registry, name) is None, name
    assert "condition{" not in generate_latest(registry).decode()


def test_available_replicas_come_from_the_deployment_read_through_the_indexes() -> None:
    other = body("other", readyReplicas=1)
    indices: dict[str, dict[Any, list[Any]]] = {
        Index.RRD: {k: [v] for b in (FULL, other) for k, v in rrd_entry(b).items()},
        Index.DEPLOYMENT: {k: [v] for k, v in child_entry(deployment("bge", available=2)).items()},
    }
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ResourceStateCollector(lambda: resource_states(World(indices))))
    assert value(registry, "status_replicas_available") == 2
    assert value(registry, "spec_replicas") == 3
    others = {"namespace": "search", "rerankerdeployment": "other"}
    assert (
        registry.get_sample_value(
            "kuberank_operator_rerankerdeployment_status_replicas_ready", others
        )
        == 1
    )
    # no Deployment seen for "other" yet
    assert (
        registry.get_sample_value(
            "kuberank_operator_rerankerdeployment_status_replicas_available", others
        )
        is None
    )


def test_the_calibrated_settings_of_each_gpu_model_are_exported() -> None:
    calibrated = body(
        "bge",
        calibration=[
            {
                "gpuModel": "NVIDIA H200",
                "state": "calibrated",
                "maxBatchTokens": 16384,
                "batchesInFlight": 2,
                "pairsPerSecond": 2771.0,
                "pods": 3,
            },
            {
                "gpuModel": "NVIDIA A10G",
                "state": "off",
                "maxBatchTokens": 16384,
                "batchesInFlight": 2,
                "pods": 1,
            },
            "not an entry",
        ],
    )
    registry = registry_of(WatchedResource(resource_view(calibrated)))
    h200 = {"gpu_model": "NVIDIA H200", "state": "calibrated"}
    setting = {"max_batch_tokens": "16384", "batches_in_flight": "2"}
    tokens = value(registry, "calibrated_max_batch_tokens", **h200, batches_in_flight="2")
    assert tokens == 16384
    assert value(registry, "calibrated_pods", **h200, **setting) == 3
    assert value(registry, "calibrated_pairs_per_second", **h200, **setting) == 2771.0
    a10 = {"gpu_model": "NVIDIA A10G", "state": "off"}
    assert value(registry, "calibrated_pods", **a10, **setting) == 1
    assert value(registry, "calibrated_pairs_per_second", **a10, **setting) is None
