"""The cluster admin's admission rules, checked again by the operator before it renders a pod.

The chart's ValidatingAdmissionPolicy enforces the same rules at the API server, reading the same
ConfigMap (values admission.*); this module is the defence in depth behind it, for clusters
without the policy and for resources created before a rule was tightened. It reads the raw spec,
as the policy reads object.spec, so both judge the same document. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kuberank_operator.model.specs import INFERENCE_IMAGE_REPOSITORY

# The ConfigMap keys the chart writes (charts/kuberank/templates/configmap-admission.yaml).
TUNING_NAMESPACES = "tuningNamespaces"
HOST_PATH_PREFIXES = "allowedHostPathPrefixes"
IMAGE_REPOSITORIES = "allowedImageRepositories"
SERVICE_TYPES = "allowedServiceTypes"
PRIORITY_CLASS_NAMES = "allowedPriorityClassNames"
POD_ANNOTATION_PREFIXES = "allowedPodAnnotationPrefixes"

# Annotation namespaces that can weaken a pod's isolation (AppArmor, seccomp, runtime sandbox).
RESERVED_ANNOTATION_DOMAINS = ("kubernetes.io", "k8s.io")
RESERVED_ANNOTATION_PREFIXES = (
    "io.kubernetes.",
    "io.containerd.",
    "io.katacontainers.",
    "io.cri-o.",
)

# The inference image's repository (spec.image's default): the only one allowed by default.
DEFAULT_IMAGE_REPOSITORY = INFERENCE_IMAGE_REPOSITORY
# In tuningNamespaces: every namespace.
ANY = "*"


@dataclass(frozen=True)
class AdmissionPolicy:
    """What a RerankerDeployment may ask for; the defaults are the chart's defaults."""

    tuning_namespaces: tuple[str, ...] = ()
    host_path_prefixes: tuple[str, ...] = ()
    image_repositories: tuple[str, ...] = (DEFAULT_IMAGE_REPOSITORY,)
    service_types: tuple[str, ...] = ("ClusterIP",)
    priority_class_names: tuple[str, ...] = ()
    pod_annotation_prefixes: tuple[str, ...] = ()

    @classmethod
    def from_configmap_data(cls, data: Mapping[str, str]) -> AdmissionPolicy:
        """The policy from the chart's ConfigMap: comma-separated lists, as the VAP splits them."""

        def split(key: str) -> tuple[str, ...]:
            return tuple(item for item in str(data.get(key, "")).split(",") if item)

        return cls(
            tuning_namespaces=split(TUNING_NAMESPACES),
            host_path_prefixes=split(HOST_PATH_PREFIXES),
            image_repositories=split(IMAGE_REPOSITORIES),
            service_types=split(SERVICE_TYPES),
            priority_class_names=split(PRIORITY_CLASS_NAMES),
            pod_annotation_prefixes=split(POD_ANNOTATION_PREFIXES),
        )


@dataclass(frozen=True)
class Refusal:
    """One rule a spec breaks: the field, the rule's name and a message that says the fix."""

    field: str
    rule: str
    message: str


def _get(raw: Mapping[str, Any], *path: str) -> Any:
    node: Any = raw
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def asks_for_tuning(spec: Mapping[str, Any]) -> bool:
    clocks = ("graphicsMinMHz", "graphicsMaxMHz", "memoryMHz")
    return _number(_get(spec, "gpu", "powerLimitWatts")) > 0 or any(
        _number(_get(spec, "gpu", "lockedClocks", clock)) > 0 for clock in clocks
    )


def host_path_allowed(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p if p.endswith("/") else p + "/") for p in prefixes)


def image_allowed(reference: str, repositories: tuple[str, ...], *, bare: bool) -> bool:
    """A repository (bare) or a full reference (repository[:tag][@digest]) against the list."""

    def matches(allowed: str) -> bool:
        if allowed.endswith("/"):
            return reference.startswith(allowed)
        if bare:
            return reference == allowed
        return reference == allowed or reference.startswith((allowed + ":", allowed + "@"))

    return any(matches(allowed) for allowed in repositories)


def reserved_annotation(key: str, allowed_prefixes: tuple[str, ...]) -> bool:
    if any(key.startswith(p) for p in allowed_prefixes):
        return False
    if key.startswith(RESERVED_ANNOTATION_PREFIXES):
        return True
    domain = key.split("/", 1)[0] if "/" in key else ""
    return domain in RESERVED_ANNOTATION_DOMAINS or domain.endswith(
        tuple("." + d for d in RESERVED_ANNOTATION_DOMAINS)
    )


def _listed(items: tuple[str, ...], empty: str) -> str:
    return ", ".join(items) if items else empty


def check(spec: Mapping[str, Any], *, namespace: str, policy: AdmissionPolicy) -> list[Refusal]:
    """Every admin rule the spec breaks, in a fixed order; empty when it may be rendered."""
    refusals: list[Refusal] = []
    tuners = _listed(policy.tuning_namespaces, "no namespace")
    tuning_allowed = namespace in policy.tuning_namespaces or ANY in policy.tuning_namespaces
    if asks_for_tuning(spec) and not tuning_allowed:
        refusals.append(
            Refusal(
                "spec.gpu.powerLimitWatts",
                "tuning-namespaces",
                "spec.gpu.powerLimitWatts and spec.gpu.lockedClocks (GPU tuning, which gives the "
                f"sidecar CAP_SYS_ADMIN) are not allowed in namespace {namespace}: rule "
                f"tuning-namespaces allows them in {tuners}"
                "; ask the cluster admin to add the namespace to the chart value "
                "admission.tuningNamespaces, or remove the tuning",
            )
        )
    host_path = _get(spec, "model", "source", "hostPath", "path")
    if isinstance(host_path, str) and not host_path_allowed(host_path, policy.host_path_prefixes):
        allowed = (
            "only paths below " + ", ".join(policy.host_path_prefixes)
            if policy.host_path_prefixes
            else "no host path"
        )
        refusals.append(
            Refusal(
                "spec.model.source.hostPath.path",
                "host-path-prefixes",
                f"spec.model.source.hostPath.path {host_path} is not allowed: rule "
                f"host-path-prefixes allows {allowed}; use a pvc or image model source, or ask "
                "the cluster admin to add a prefix to admission.allowedHostPathPrefixes",
            )
        )
    repositories = _listed(policy.image_repositories, "no repository")
    repository = _get(spec, "image", "repository")
    repository = repository if isinstance(repository, str) else DEFAULT_IMAGE_REPOSITORY
    if not image_allowed(repository, policy.image_repositories, bare=True):
        refusals.append(
            Refusal(
                "spec.image.repository",
                "image-repositories",
                f"spec.image.repository {repository} is not allowed: rule image-repositories "
                f"allows {repositories} (chart value admission.allowedImageRepositories)",
            )
        )
    model_image = _get(spec, "model", "source", "image", "reference")
    if isinstance(model_image, str) and not image_allowed(
        model_image, policy.image_repositories, bare=False
    ):
        refusals.append(
            Refusal(
                "spec.model.source.image.reference",
                "image-repositories",
                f"spec.model.source.image.reference {model_image} is not allowed: rule "
                f"image-repositories allows {repositories} "
                "(chart value admission.allowedImageRepositories)",
            )
        )
    service_type = _get(spec, "service", "type")
    service_type = service_type if isinstance(service_type, str) else "ClusterIP"
    if service_type not in policy.service_types:
        refusals.append(
            Refusal(
                "spec.service.type",
                "service-types",
                f"spec.service.type {service_type} is not allowed: rule service-types allows "
                f"{_listed(policy.service_types, 'no type')} "
                "(chart value admission.allowedServiceTypes)",
            )
        )
    priority = _get(spec, "priorityClassName")
    if isinstance(priority, str) and priority:
        names = policy.priority_class_names
        if (priority not in names) if names else priority.startswith("system-"):
            rule = f"allows only {', '.join(names)}" if names else "refuses system-* classes"
            refusals.append(
                Refusal(
                    "spec.priorityClassName",
                    "priority-classes",
                    f"spec.priorityClassName {priority} is not allowed: rule priority-classes "
                    f"{rule} (chart value admission.allowedPriorityClassNames)",
                )
            )
    annotations = _get(spec, "podAnnotations")
    if isinstance(annotations, Mapping):
        reserved = [
            str(k)
            for k in annotations
            if reserved_annotation(str(k), policy.pod_annotation_prefixes)
        ]
        if reserved:
            refusals.append(
                Refusal(
                    "spec.podAnnotations",
                    "reserved-annotations",
                    f"spec.podAnnotations {', '.join(reserved)} not allowed: rule "
                    "reserved-annotations refuses keys in the Kubernetes and container-runtime "
                    "namespaces (they can switch off AppArmor, seccomp or the runtime sandbox) "
                    "unless the cluster admin lists their prefix in "
                    "admission.allowedPodAnnotationPrefixes",
                )
            )
    return refusals
