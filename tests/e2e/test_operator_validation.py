"""The CRD on a real API server: it applies with kubectl, and invalid RerankerDeployments are
rejected by the API server itself (schema and CEL rules) with a message naming the field."""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import LocalCluster, wait_until
from tests.e2e.operator_support import minimal_spec, rrd_crd, rrd_manifest

__all__ = ["rrd_crd"]


@pytest.fixture(scope="module")
def validation_namespace(local_cluster: LocalCluster, rrd_crd: Path) -> Iterator[str]:
    # Nothing is ever created here: one namespace serves every rejected manifest.
    name = f"rrd-valid-{secrets.token_hex(3)}"
    local_cluster.kubectl("create", "namespace", name)
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_crd_applies_with_kubectl(local_cluster: LocalCluster, rrd_crd: Path) -> None:
    crd = local_cluster.kubectl_json("get", "crd", "rerankerdeployments.kuberank.dev")
    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert established[0]["status"] == "True"
    assert crd["spec"]["names"]["shortNames"] == ["rrd"]
    assert crd["status"]["acceptedNames"]["shortNames"] == ["rrd"]
    # kubectl reads the published schema: descriptions reach `kubectl explain`.
    explained = ""

    def explains() -> bool:
        nonlocal explained
        # Discovery and the published OpenAPI follow the CRD within seconds, not at once.
        done = local_cluster.kubectl("explain", "rrd.spec.gpu.vramSafetyMargin", check=False)
        explained = done.stdout
        return done.returncode == 0

    wait_until(explains, timeout=60, what="kubectl explain rrd.spec.gpu.vramSafetyMargin")
    assert "Fraction of the device memory kept free" in explained
    # Applying the same file again is a no-op, as a chart upgrade would do it.
    again = local_cluster.kubectl("apply", "--server-side", "-f", str(rrd_crd)).stdout
    assert "serverside-applied" in again


def _spec(**change: Any) -> dict[str, Any]:
    return minimal_spec(**change)


# (case id, spec or None, metadata.name, the field the message must name, a phrase of the fix)
INVALID: list[tuple[str, dict[str, Any] | None, str, str, str]] = [
    (
        "min-above-max",
        _spec(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "bad",
        "spec.autoscaling.minReplicas",
        "must not exceed spec.autoscaling.maxReplicas",
    ),
    (
        "replicas-outside-builtin-range",
        _spec(replicas=9, autoscaling={"mode": "builtin", "minReplicas": 1, "maxReplicas": 4}),
        "bad",
        "spec.replicas",
        "while spec.autoscaling.mode is builtin",
    ),
    (
        "power-limit-on-mig",
        _spec(gpu={"resourceName": "nvidia.com/mig-1g.10gb", "powerLimitWatts": 250}),
        "bad",
        "spec.gpu.powerLimitWatts",
        "on a MIG slice",
    ),
    (
        "locked-clocks-on-mig",
        _spec(
            gpu={
                "resourceName": "nvidia.com/mig-3g.40gb",
                "lockedClocks": {"graphicsMinMHz": 1000, "graphicsMaxMHz": 1400},
            }
        ),
        "bad",
        "spec.gpu.lockedClocks",
        "on a MIG slice",
    ),
    (
        "margin-above-half",
        _spec(gpu={"vramSafetyMargin": 0.7}),
        "bad",
        "spec.gpu.vramSafetyMargin",
        "less than or equal to 0.5",
    ),
    (
        "margin-negative",
        _spec(gpu={"vramSafetyMargin": -0.1}),
        "bad",
        "spec.gpu.vramSafetyMargin",
        "greater than or equal to 0",
    ),
    (
        "clock-min-above-max",
        _spec(gpu={"lockedClocks": {"graphicsMinMHz": 1800, "graphicsMaxMHz": 1400}}),
        "bad",
        "spec.gpu.lockedClocks.graphicsMinMHz",
        "must not exceed",
    ),
    (
        "not-a-gpu-resource",
        _spec(gpu={"resourceName": "amd.com/gpu"}),
        "bad",
        "spec.gpu.resourceName",
        "use nvidia.com/gpu or a MIG profile",
    ),
    (
        "power-limit-too-low",
        _spec(gpu={"powerLimitWatts": 20}),
        "bad",
        "spec.gpu.powerLimitWatts",
        "at least 50 W",
    ),
    (
        "token-budget-below-max-length",
        _spec(
            batching={"maxBatchTokens": 256},
            model={"id": "m", "maxLength": 512, "source": {"hostPath": {"path": "/m"}}},
        ),
        "bad",
        "spec.batching.maxBatchTokens",
        "at least spec.model.maxLength",
    ),
    (
        "token-budget-below-64",
        _spec(
            batching={"maxBatchTokens": 32},
            model={"id": "m", "maxLength": 16, "source": {"hostPath": {"path": "/m"}}},
        ),
        "bad",
        "spec.batching.maxBatchTokens",
        "0 (calibrated at start-up) or at",
    ),
    (
        "unknown-calibration-mode",
        _spec(batching={"calibration": {"mode": "sometimes"}}),
        "bad",
        "spec.batching.calibration.mode",
        'supported values: "auto", "on", "off"',
    ),
    (
        "two-model-sources",
        _spec(model={"id": "m", "source": {"hostPath": {"path": "/m"}, "pvc": {"claimName": "x"}}}),
        "bad",
        "spec.model.source",
        "exactly one of pvc, hostPath or image",
    ),
    (
        "relative-host-path",
        _spec(model={"id": "m", "source": {"hostPath": {"path": "models"}}}),
        "bad",
        "spec.model.source.hostPath.path",
        "absolute directory",
    ),
    (
        "rollout-cannot-progress",
        _spec(rollout={"maxSurge": "0%", "maxUnavailable": 0}),
        "bad",
        "spec.rollout.maxUnavailable",
        "must not both be 0",
    ),
    (
        "gpu-in-resources",
        _spec(resources={"limits": {"nvidia.com/gpu": 2}}),
        "bad",
        "spec.resources",
        "set the GPU in spec.gpu.resourceName",
    ),
    (
        "tuning-without-sidecar",
        _spec(sidecar={"enabled": False}, gpu={"powerLimitWatts": 300}),
        "bad",
        "spec.sidecar.enabled",
        "the sidecar applies and restores GPU tuning",
    ),
    (
        "scale-down-above-scale-up",
        _spec(autoscaling={"scaleUp": {"gpuUtilization": 50}, "scaleDown": {"gpuUtilization": 60}}),
        "bad",
        "spec.autoscaling.scaleDown.gpuUtilization",
        "so that scaling does not flap",
    ),
    (
        "unknown-task",
        _spec(model={"id": "m", "task": "classify", "source": {"hostPath": {"path": "/m"}}}),
        "bad",
        "spec.model.task",
        'supported values: "rerank", "embed"',
    ),
    ("missing-model", None, "bad", "spec.model", "Required value"),
    ("name-too-long", _spec(), "a" * 55, "metadata.name", "at most 50 characters"),
]


@pytest.mark.parametrize(
    ("spec", "name", "field", "phrase"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID],
)
def test_invalid_manifest_is_rejected_naming_the_field(
    local_cluster: LocalCluster,
    validation_namespace: str,
    spec: dict[str, Any] | None,
    name: str,
    field: str,
    phrase: str,
) -> None:
    manifest = rrd_manifest(name, copy.deepcopy(spec) if spec is not None else {})
    done = local_cluster.kubectl(
        "create", "-n", validation_namespace, "-f", "-", input=json.dumps(manifest), check=False
    )
    assert done.returncode != 0, done.stdout
    assert "is invalid" in done.stderr
    assert field in done.stderr, done.stderr
    assert phrase in done.stderr, done.stderr
    left = local_cluster.kubectl_json("get", "rrd", "-n", validation_namespace)["items"]
    assert left == [], "a rejected manifest must change nothing"


def test_valid_manifest_is_accepted_and_defaulted(
    local_cluster: LocalCluster, validation_namespace: str
) -> None:
    """The control case: the same minimal spec the invalid ones start from is fine."""
    manifest = rrd_manifest("fine", minimal_spec())
    local_cluster.kubectl(
        "create", "-n", validation_namespace, "-f", "-", input=json.dumps(manifest)
    )
    try:
        spec = local_cluster.kubectl_json("get", "rrd", "fine", "-n", validation_namespace)["spec"]
        assert spec["replicas"] == 1
        assert spec["gpu"]["resourceName"] == "nvidia.com/gpu"
        assert spec["gpu"]["vramSafetyMargin"] == 0.1
        assert spec["autoscaling"]["mode"] == "off"
        assert spec["rollout"] == {"maxSurge": 0, "maxUnavailable": 1}
        assert spec["batching"]["maxBatchTokens"] == 0  # 0: the server calibrates it
        assert spec["batching"]["calibration"]["mode"] == "auto"
    finally:
        local_cluster.kubectl("delete", "rrd", "fine", "-n", validation_namespace, "--wait=true")


def test_scale_outside_the_builtin_range_is_rejected(
    local_cluster: LocalCluster, validation_namespace: str
) -> None:
    """The scale subresource runs the same rules: kubectl scale cannot leave [min, max]."""
    spec = minimal_spec(autoscaling={"mode": "builtin", "minReplicas": 1, "maxReplicas": 3})
    local_cluster.kubectl(
        "create", "-n", validation_namespace, "-f", "-",
        input=json.dumps(rrd_manifest("auto", spec)),
    )  # fmt: skip
    try:
        refused = local_cluster.kubectl(
            "scale", "rrd", "auto", "--replicas=5", "-n", validation_namespace, check=False
        )
        assert refused.returncode != 0
        assert "spec.replicas" in refused.stderr
        assert "while spec.autoscaling.mode is builtin" in refused.stderr
        local_cluster.kubectl("scale", "rrd", "auto", "--replicas=3", "-n", validation_namespace)
        path = (
            f"/apis/kuberank.dev/v1alpha1/namespaces/{validation_namespace}"
            "/rerankerdeployments/auto/scale"
        )
        scale = json.loads(local_cluster.kubectl("get", "--raw", path).stdout)
        assert scale["kind"] == "Scale"
        assert scale["spec"]["replicas"] == 3
    finally:
        local_cluster.kubectl("delete", "rrd", "auto", "-n", validation_namespace, "--wait=true")
