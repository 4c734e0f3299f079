"""Invalid and hostile RerankerDeployments, shared by the API-server e2e and the operator re-check.

Each case is what a namespace user might submit. `refused_by` says who must stop it:
- "schema": the CRD's OpenAPI schema and CEL rules (the API server, with or without the chart);
- a rule name of the chart's ValidatingAdmissionPolicy, which the operator's admission check
  (kuberank_operator.admission) must refuse with the same rule name.
`field` is the field the message must name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The namespace the e2e's admin allows GPU tuning in, and the one host path prefix it allows.
TUNING_NAMESPACE_SUFFIX = "-tuning"
ALLOWED_HOST_PATH = "/var/lib/kuberank/models"
ALLOWED_REPOSITORY = "ghcr.io/kuberank/kuberank-inference"


def base_spec() -> dict[str, Any]:
    """A spec every rule accepts under the e2e's admin policy (the control case)."""
    return {
        "model": {
            "id": "BAAI/bge-reranker-v2-m3",
            "source": {"hostPath": {"path": f"{ALLOWED_HOST_PATH}/bge"}},
        }
    }


@dataclass(frozen=True)
class HostileCase:
    id: str
    change: dict[str, Any]
    refused_by: str
    field: str
    # Replace these top-level spec keys instead of merging into them.
    replace: tuple[str, ...] = ()

    def spec(self) -> dict[str, Any]:
        spec = base_spec()
        for key, value in self.change.items():
            if key in self.replace or not isinstance(value, dict) or key not in spec:
                spec[key] = value
            else:
                spec[key] = {**spec[key], **value}
        return spec


def _model(source: dict[str, Any]) -> dict[str, Any]:
    return {"id": "m", "source": source}


def _tol(**fields: Any) -> dict[str, Any]:
    return {"tolerations": [fields]}


def _node_term(expression: dict[str, Any]) -> dict[str, Any]:
    required = {"nodeSelectorTerms": [{"matchExpressions": [expression]}]}
    return {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    }


SCHEMA = "schema"

CASES: list[HostileCase] = [
    # --- quantities and resources
    HostileCase(
        "negative-cpu-string",
        {"resources": {"requests": {"cpu": "-1"}}},
        SCHEMA,
        "spec.resources.requests",
    ),
    HostileCase(
        "negative-memory-int",
        {"resources": {"requests": {"memory": -5}}},
        SCHEMA,
        "spec.resources.requests",
    ),
    HostileCase(
        "quantity-garbage",
        {"resources": {"limits": {"memory": "lots"}}},
        SCHEMA,
        "spec.resources.limits",
    ),
    HostileCase(
        "quantity-with-space",
        {"resources": {"limits": {"memory": "8 Gi"}}},
        SCHEMA,
        "spec.resources.limits",
    ),
    HostileCase(
        "request-above-limit",
        {"resources": {"requests": {"memory": "16Gi"}, "limits": {"memory": "8Gi"}}},
        SCHEMA,
        "spec.resources.requests",
    ),
    HostileCase(
        "unqualified-resource-name",
        {"resources": {"limits": {"gpu": 1}}},
        SCHEMA,
        "spec.resources.limits",
    ),
    HostileCase(
        "gpu-in-resources",
        {"resources": {"limits": {"nvidia.com/gpu": 4}}},
        SCHEMA,
        "spec.resources",
    ),
    HostileCase(
        "sidecar-asks-for-gpu",
        {"sidecar": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
        SCHEMA,
        "spec.sidecar.resources",
    ),
    HostileCase(
        "sidecar-asks-for-device",
        {"sidecar": {"resources": {"requests": {"amd.com/gpu": 1}}}},
        SCHEMA,
        "spec.sidecar.resources",
    ),
    HostileCase(
        "sidecar-negative-cpu",
        {"sidecar": {"resources": {"requests": {"cpu": "-100m"}}}},
        SCHEMA,
        "spec.sidecar.resources.requests",
    ),
    # --- labels and annotations
    HostileCase(
        "node-selector-key-with-space",
        {"nodeSelector": {"bad key": "x"}},
        SCHEMA,
        "spec.nodeSelector",
    ),
    HostileCase(
        "node-selector-value-with-space",
        {"nodeSelector": {"zone": "a b"}},
        SCHEMA,
        "spec.nodeSelector",
    ),
    HostileCase(
        "node-selector-value-too-long",
        {"nodeSelector": {"zone": "z" * 64}},
        SCHEMA,
        "spec.nodeSelector",
    ),
    HostileCase(
        "node-selector-prefix-not-dns",
        {"nodeSelector": {"Example.COM/zone": "a"}},
        SCHEMA,
        "spec.nodeSelector",
    ),
    HostileCase(
        "monitoring-label-key-leading-dash",
        {"monitoring": {"labels": {"-release": "x"}}},
        SCHEMA,
        "spec.monitoring.labels",
    ),
    HostileCase(
        "annotation-key-with-space",
        {"podAnnotations": {"my note": "x"}},
        SCHEMA,
        "spec.podAnnotations",
    ),
    # --- image references and names
    HostileCase(
        "repository-with-space",
        {"image": {"repository": "evil image"}},
        SCHEMA,
        "spec.image.repository",
    ),
    HostileCase(
        "repository-upper-case-path",
        {"image": {"repository": "ghcr.io/Kuberank/kuberank"}},
        SCHEMA,
        "spec.image.repository",
    ),
    HostileCase(
        "repository-with-tag",
        {"image": {"repository": "ghcr.io/kuberank/kuberank:latest"}},
        SCHEMA,
        "spec.image.repository",
    ),
    HostileCase("tag-with-space", {"image": {"tag": "1.0 beta"}}, SCHEMA, "spec.image.tag"),
    HostileCase("digest-not-hex", {"image": {"tag": "sha256:xyz"}}, SCHEMA, "spec.image.tag"),
    HostileCase(
        "model-image-with-space",
        {"model": _model({"image": {"reference": "registry.example.com/m odel:1"}})},
        SCHEMA,
        "spec.model.source.image.reference",
        replace=("model",),
    ),
    HostileCase(
        "pull-secret-not-dns",
        {"image": {"pullSecrets": ["Bad_Name"]}},
        SCHEMA,
        "spec.image.pullSecrets",
    ),
    HostileCase(
        "claim-name-with-space",
        {"model": _model({"pvc": {"claimName": "my claim"}})},
        SCHEMA,
        "spec.model.source.pvc.claimName",
        replace=("model",),
    ),
    HostileCase(
        "priority-class-not-dns",
        {"priorityClassName": "Bad Class"},
        SCHEMA,
        "spec.priorityClassName",
    ),
    HostileCase(
        "api-secret-not-dns",
        {"apiAuth": {"secretName": "Bad_Secret"}},
        SCHEMA,
        "spec.apiAuth.secretName",
    ),
    HostileCase(
        "api-key-with-slash",
        {"apiAuth": {"secretName": "s", "key": "a/b"}},
        SCHEMA,
        "spec.apiAuth.key",
    ),
    # --- tolerations
    HostileCase(
        "toleration-equal-without-key",
        _tol(operator="Equal", value="x"),
        SCHEMA,
        "spec.tolerations[0].operator",
    ),
    HostileCase(
        "toleration-exists-with-value",
        _tol(key="k", operator="Exists", value="v"),
        SCHEMA,
        "spec.tolerations[0].value",
    ),
    HostileCase(
        "toleration-seconds-without-noexecute",
        _tol(key="k", operator="Exists", effect="NoSchedule", tolerationSeconds=30),
        SCHEMA,
        "spec.tolerations[0].tolerationSeconds",
    ),
    HostileCase(
        "toleration-key-with-space",
        _tol(key="bad key", operator="Exists"),
        SCHEMA,
        "spec.tolerations[0].key",
    ),
    HostileCase(
        "toleration-unknown-effect",
        _tol(key="k", operator="Exists", effect="Sometimes"),
        SCHEMA,
        "spec.tolerations[0].effect",
    ),
    # --- affinity, as the core/v1 schema types it
    HostileCase(
        "affinity-wrong-type",
        {"affinity": "everywhere"},
        SCHEMA,
        "spec.affinity",
        replace=("affinity",),
    ),
    HostileCase(
        "affinity-terms-wrong-type",
        {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": "x"}}},
        SCHEMA,
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    ),
    HostileCase(
        "affinity-unknown-field",
        {"affinity": {"nodeAffinity": {"requiredDuringScheduling": {}}}},
        SCHEMA,
        "spec.affinity.nodeAffinity",
    ),
    HostileCase(
        "affinity-values-wrong-type",
        _node_term({"key": "zone", "operator": "In", "values": "a"}),
        SCHEMA,
        "values",
    ),
    # --- rollout and counts
    HostileCase(
        "rollout-percent-above-100",
        {"rollout": {"maxUnavailable": "150%"}},
        SCHEMA,
        "spec.rollout.maxUnavailable",
    ),
    HostileCase(
        "rollout-negative-surge", {"rollout": {"maxSurge": -1}}, SCHEMA, "spec.rollout.maxSurge"
    ),
    HostileCase(
        "rollout-not-a-count",
        {"rollout": {"maxUnavailable": "abc"}},
        SCHEMA,
        "spec.rollout.maxUnavailable",
    ),
    HostileCase("replicas-negative", {"replicas": -1}, SCHEMA, "spec.replicas"),
    HostileCase(
        "service-port-too-large", {"service": {"port": 70000}}, SCHEMA, "spec.service.port"
    ),
    # --- the admin's rules (ValidatingAdmissionPolicy, re-checked by the operator)
    HostileCase(
        "host-path-root",
        {"model": _model({"hostPath": {"path": "/"}})},
        "host-path-prefixes",
        "spec.model.source.hostPath.path",
        replace=("model",),
    ),
    HostileCase(
        "host-path-kubelet-dir",
        {"model": _model({"hostPath": {"path": "/var/lib/kubelet"}})},
        "host-path-prefixes",
        "spec.model.source.hostPath.path",
        replace=("model",),
    ),
    HostileCase(
        "host-path-prefix-lookalike",
        {"model": _model({"hostPath": {"path": ALLOWED_HOST_PATH + "-evil"}})},
        "host-path-prefixes",
        "spec.model.source.hostPath.path",
        replace=("model",),
    ),
    HostileCase(
        "image-from-elsewhere",
        {"image": {"repository": "docker.io/evil/miner"}},
        "image-repositories",
        "spec.image.repository",
    ),
    HostileCase(
        "image-repository-lookalike",
        {"image": {"repository": ALLOWED_REPOSITORY + "-evil"}},
        "image-repositories",
        "spec.image.repository",
    ),
    HostileCase(
        "model-image-from-elsewhere",
        {"model": _model({"image": {"reference": "docker.io/evil/weights:1"}})},
        "image-repositories",
        "spec.model.source.image.reference",
        replace=("model",),
    ),
    HostileCase(
        "power-limit-outside-tuning-namespaces",
        {"gpu": {"powerLimitWatts": 300}},
        "tuning-namespaces",
        "spec.gpu.powerLimitWatts",
    ),
    HostileCase(
        "locked-clocks-outside-tuning-namespaces",
        {"gpu": {"lockedClocks": {"graphicsMinMHz": 1200, "graphicsMaxMHz": 1400}}},
        "tuning-namespaces",
        "spec.gpu.powerLimitWatts",
    ),
    HostileCase(
        "service-load-balancer",
        {"service": {"type": "LoadBalancer"}},
        "service-types",
        "spec.service.type",
    ),
    HostileCase(
        "service-node-port", {"service": {"type": "NodePort"}}, "service-types", "spec.service.type"
    ),
    HostileCase(
        "priority-system-node-critical",
        {"priorityClassName": "system-node-critical"},
        "priority-classes",
        "spec.priorityClassName",
    ),
    HostileCase(
        "priority-system-cluster-critical",
        {"priorityClassName": "system-cluster-critical"},
        "priority-classes",
        "spec.priorityClassName",
    ),
    HostileCase(
        "apparmor-unconfined",
        {
            "podAnnotations": {
                "container.apparmor.security.beta.kubernetes.io/inference": "unconfined"
            }
        },
        "reserved-annotations",
        "spec.podAnnotations",
    ),
    HostileCase(
        "seccomp-unconfined",
        {"podAnnotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
        "reserved-annotations",
        "spec.podAnnotations",
    ),
    HostileCase(
        "untrusted-workload-runtime",
        {"podAnnotations": {"io.kubernetes.cri.untrusted-workload": "true"}},
        "reserved-annotations",
        "spec.podAnnotations",
    ),
    HostileCase(
        "kubernetes-io-annotation",
        {"podAnnotations": {"kubernetes.io/psp": "privileged"}},
        "reserved-annotations",
        "spec.podAnnotations",
    ),
]

POLICY_CASES = [case for case in CASES if case.refused_by != SCHEMA]
SCHEMA_CASES = [case for case in CASES if case.refused_by == SCHEMA]
