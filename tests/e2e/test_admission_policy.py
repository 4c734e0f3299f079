"""The trust boundary on a real API server: a namespace user who may only create
RerankerDeployments, impersonated, submits every case of tests/hostile_specs.py. The CRD's schema
or the chart's ValidatingAdmissionPolicy (rendered by helm with an admin's values) refuses each
one with a message naming the field, and nothing is created."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster import LocalCluster, wait_until
from tests.e2e.operator_support import rrd_manifest
from tests.hostile_specs import (
    ALLOWED_HOST_PATH,
    CASES,
    TUNING_NAMESPACE_SUFFIX,
    HostileCase,
    base_spec,
)

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "kuberank"
ADMISSION_TEMPLATES = (
    "templates/configmap-admission.yaml",
    "templates/validatingadmissionpolicy.yaml",
    "templates/validatingadmissionpolicybinding.yaml",
)
SELECTOR_LABEL = "kuberank.dev/e2e-admission"


@dataclass(frozen=True)
class Tenant:
    user: str
    namespace: str  # where the user may create RerankerDeployments
    tuning_namespace: str  # one the admin allows GPU tuning in
    release_namespace: str
    policy: str  # the ValidatingAdmissionPolicy's name

    def kubectl_as(
        self, cluster: LocalCluster, *args: str, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(*args, f"--as={self.user}", **kwargs)


def _grant_create_only(cluster: LocalCluster, user: str, namespace: str) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "rrd-creator", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["kuberank.dev"],
                "resources": ["rerankerdeployments"],
                "verbs": ["create"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rrd-creator", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rrd-creator"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    for obj in (role, binding):
        cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(obj))


@pytest.fixture(scope="module")
def tenant(local_cluster: LocalCluster, rrd_crd: Path) -> Iterator[Tenant]:
    suffix = secrets.token_hex(3)
    name = f"adm-{suffix}"
    tenant = Tenant(
        user=f"alice-{suffix}",
        namespace=name,
        tuning_namespace=name + TUNING_NAMESPACE_SUFFIX,
        release_namespace=f"{name}-kuberank",
        policy=f"adm{suffix}-kuberank-admission",
    )
    for namespace in (tenant.namespace, tenant.tuning_namespace, tenant.release_namespace):
        local_cluster.kubectl("create", "namespace", namespace)
        local_cluster.kubectl("label", "namespace", namespace, f"{SELECTOR_LABEL}={suffix}")
        _grant_create_only(local_cluster, tenant.user, namespace)
    escaped_label = SELECTOR_LABEL.replace(".", "\\.")  # helm --set splits keys at dots
    show = [arg for template in ADMISSION_TEMPLATES for arg in ("--show-only", template)]
    rendered = local_cluster.helm(
        "template", f"adm{suffix}", str(CHART), "-n", tenant.release_namespace, *show,
        "--set", f"admission.tuningNamespaces={{{tenant.tuning_namespace}}}",
        "--set", f"admission.allowedHostPathPrefixes={{{ALLOWED_HOST_PATH}}}",
        "--set-string", f"admission.namespaceSelector.matchLabels.{escaped_label}={suffix}",
    ).stdout  # fmt: skip
    local_cluster.kubectl("apply", "--server-side", "-f", "-", input=rendered)
    probe = HostileCase("probe", {"service": {"type": "NodePort"}}, "service-types", "x")

    def policy_in_force() -> bool:
        # The API server compiles a new policy and its binding within seconds, not at once.
        done = _create(local_cluster, tenant, tenant.namespace, "probe", probe.spec())
        if done.returncode == 0:
            local_cluster.kubectl("delete", "rrd", "probe", "-n", tenant.namespace)
            return False
        return tenant.policy in done.stderr

    wait_until(policy_in_force, timeout=60, what="the ValidatingAdmissionPolicy to be in force")
    try:
        yield tenant
    finally:
        local_cluster.kubectl(
            "delete", "-f", "-", "--ignore-not-found", input=rendered, check=False
        )
        for namespace in (tenant.namespace, tenant.tuning_namespace, tenant.release_namespace):
            local_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _create(
    cluster: LocalCluster, tenant: Tenant, namespace: str, name: str, spec: dict[str, Any]
) -> Any:
    manifest = rrd_manifest(name, spec)
    return tenant.kubectl_as(
        cluster, "create", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False
    )


def test_the_user_may_create_rerankerdeployments_and_nothing_that_runs(
    local_cluster: LocalCluster, tenant: Tenant
) -> None:
    def can_i(verb: str, resource: str) -> bool:
        done = tenant.kubectl_as(
            local_cluster, "auth", "can-i", verb, resource, "-n", tenant.namespace, check=False
        )
        return done.stdout.strip() == "yes"

    assert can_i("create", "rerankerdeployments.kuberank.dev")
    for verb, resource in [
        ("create", "pods"),
        ("create", "deployments.apps"),
        ("create", "pods/exec"),
        ("update", "rerankerdeployments.kuberank.dev/status"),
        ("update", "configmaps"),
        ("create", "validatingadmissionpolicybindings.admissionregistration.k8s.io"),
    ]:
        assert not can_i(verb, resource), f"{tenant.user} must not {verb} {resource}"


def test_allowed_specs_are_accepted(local_cluster: LocalCluster, tenant: Tenant) -> None:
    """The control cases: what the admin allows goes through, tuning in its namespace only."""
    assert _create(local_cluster, tenant, tenant.namespace, "fine", base_spec()).returncode == 0
    tuned = base_spec() | {"gpu": {"powerLimitWatts": 300}}
    done = _create(local_cluster, tenant, tenant.tuning_namespace, "tuned", tuned)
    assert done.returncode == 0, done.stderr
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    typed = base_spec() | {
        "affinity": affinity,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "podAnnotations": {"team.example.com/owner": "search"},
        "rollout": {"maxSurge": "25%", "maxUnavailable": 0},
    }
    done = _create(local_cluster, tenant, tenant.namespace, "typed", typed)
    assert done.returncode == 0, done.stderr
    stored = local_cluster.kubectl_json("get", "rrd", "typed", "-n", tenant.namespace)["spec"]
    assert stored["affinity"] == affinity


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hostile_spec_is_refused_naming_the_field(
    local_cluster: LocalCluster, tenant: Tenant, case: HostileCase
) -> None:
    name = f"h-{secrets.token_hex(3)}"
    done = _create(local_cluster, tenant, tenant.namespace, name, case.spec())
    assert done.returncode != 0, f"{case.id} was accepted"
    assert case.field in done.stderr, done.stderr
    if case.refused_by == "schema":
        # The schema refuses (or strict field validation, for a field the Pod API lacks).
        assert "is invalid" in done.stderr or "unknown field" in done.stderr, done.stderr
        assert tenant.policy not in done.stderr, done.stderr
    else:
        assert tenant.policy in done.stderr, done.stderr
        assert f"rule {case.refused_by}" in done.stderr, done.stderr
    listing = local_cluster.kubectl_json("get", "rrd,deployments,pods", "-n", tenant.namespace)
    names = {item["metadata"]["name"] for item in listing["items"]}
    assert not any(n.startswith(name) for n in names), "a refused manifest must create nothing"
