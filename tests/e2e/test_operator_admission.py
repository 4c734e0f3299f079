"""The operator's re-check of the admin's rules, with no ValidatingAdmissionPolicy in the way
(a cluster without the chart's policy, or a resource created before a rule was tightened): every
hostile spec of tests/hostile_specs.py that the policy would refuse is stored, reported as
Ready=False / AdmissionRefused with an Event naming the field and the rule, and gets no pod.
What the rules allow is rendered, with the sidecar on the operator's own image."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from localcluster import LocalCluster, wait_until
from tests.e2e.operator_process import OperatorProcess, apply_admission_rules
from tests.e2e.operator_support import apply, rrd_manifest
from tests.e2e.rerankers import OWNER_LABEL
from tests.hostile_specs import (
    ALLOWED_HOST_PATH,
    ALLOWED_REPOSITORY,
    POLICY_CASES,
    HostileCase,
    base_spec,
)

pytestmark = pytest.mark.e2e

SIDECAR_IMAGE = "registry.example.com/kuberank/kuberank:e2e"
# The chart's defaults, but for one host path prefix: what the e2e hostile cases expect.
STRICT_RULES = {
    "tuningNamespaces": "",
    "allowedHostPathPrefixes": ALLOWED_HOST_PATH,
    "allowedImageRepositories": ALLOWED_REPOSITORY,
    "allowedServiceTypes": "ClusterIP",
    "allowedPriorityClassNames": "",
    "allowedPodAnnotationPrefixes": "",
}


@pytest.fixture(scope="module")
def strict(local_cluster: LocalCluster, rrd_crd: Any) -> tuple[str, str]:
    """A namespace and the NAMESPACE/NAME of strict rules beside it."""
    namespace = f"rrd-adm-{secrets.token_hex(3)}"
    rules = apply_admission_rules(local_cluster, namespace, "strict-admission", STRICT_RULES)
    return namespace, rules


def _condition(rrd: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (rrd.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def _deployments(cluster: LocalCluster, namespace: str, name: str) -> list[Any]:
    listing = cluster.kubectl_json(
        "get", "deployments", "-n", namespace, "-l", f"{OWNER_LABEL}={name}"
    )
    return list(listing["items"])


def test_hostile_specs_are_refused_by_the_operator_and_get_no_pod(
    local_cluster: LocalCluster,
    strict: tuple[str, str],
    operators: Callable[..., OperatorProcess],
) -> None:
    namespace, rules = strict
    operators(namespace, admission_rules=rules, extra_args=("--sidecar-image", SIDECAR_IMAGE))
    names: dict[str, HostileCase] = {}
    for i, case in enumerate(POLICY_CASES):
        name = f"h{i}"
        names[name] = case
        apply(local_cluster, namespace, rrd_manifest(name, case.spec()))
    refused: dict[str, dict[str, Any]] = {}

    def all_reported() -> bool:
        for item in local_cluster.kubectl_json("get", "rrd", "-n", namespace)["items"]:
            ready = _condition(item, "Ready")
            if ready is not None and ready["reason"] == "AdmissionRefused":
                refused[item["metadata"]["name"]] = ready
        return set(refused) >= set(names)

    wait_until(all_reported, timeout=90, what="every hostile RerankerDeployment AdmissionRefused")
    events = local_cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", "reason=AdmissionRefused"
    )["items"]
    for name, case in names.items():
        message = refused[name]["message"]
        assert refused[name]["status"] == "False"
        assert case.field in message, message
        assert f"rule {case.refused_by}" in message, message
        assert any(
            e["involvedObject"]["name"] == name and case.field in e["message"] for e in events
        )
        assert _deployments(local_cluster, namespace, name) == [], f"{case.id} got a Deployment"
    pods = local_cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
    assert pods == []


def test_allowed_spec_is_rendered_with_the_operators_sidecar_image(
    local_cluster: LocalCluster,
    strict: tuple[str, str],
    operators: Callable[..., OperatorProcess],
) -> None:
    namespace, rules = strict
    operators(namespace, admission_rules=rules, extra_args=("--sidecar-image", SIDECAR_IMAGE))
    spec = base_spec() | {"image": {"repository": ALLOWED_REPOSITORY, "tag": "9.9.9"}}
    apply(local_cluster, namespace, rrd_manifest("allowed", spec))
    found: list[Any] = []

    def rendered() -> bool:
        found[:] = _deployments(local_cluster, namespace, "allowed")
        return bool(found)

    wait_until(rendered, timeout=60, what="the allowed RerankerDeployment's Deployment")
    containers = {c["name"]: c for c in found[0]["spec"]["template"]["spec"]["containers"]}
    assert containers["inference"]["image"] == f"{ALLOWED_REPOSITORY}:9.9.9"
    assert containers["gpu-sidecar"]["image"] == SIDECAR_IMAGE
    rrd = local_cluster.kubectl_json("get", "rrd", "allowed", "-n", namespace)
    ready = _condition(rrd, "Ready")
    assert ready is None or ready["reason"] != "AdmissionRefused"
