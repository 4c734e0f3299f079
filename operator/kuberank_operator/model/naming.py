"""How the operator names, labels and identifies what it creates and watches."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

GROUP = "kuberank.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RerankerDeployment"
PLURAL = "rerankerdeployments"

# The field manager of the objects the operator renders (Deployment, Service, PDB, monitoring).
FIELD_MANAGER = "kuberank-operator"


class StatusWriter(StrEnum):
    """One server-side-apply field manager per writer of status: each field has one owner.

    RECONCILER: observedGeneration, replicas, readyReplicas, updatedReplicas, selector, ready,
    state, reason, capacity, conditions. AUTOSCALER: lastScale (and spec.replicas through the
    scale subresource). OOM_RESTARTS: oom.restarts, oom.lastRestartTime, oom.lastReason,
    oom.lastPod, oom.restartsLastHour. TOKEN_BUDGET: oom.reducedMaxBatchTokens. CALIBRATION:
    calibration (the pods' batching settings and measured pairs/s, per GPU model).
    """

    RECONCILER = "kuberank-reconciler"
    AUTOSCALER = "kuberank-autoscaler"
    OOM_RESTARTS = "kuberank-oom"
    TOKEN_BUDGET = "kuberank-token-budget"
    CALIBRATION = "kuberank-calibration"


# Events say which component acted, as `kubectl describe` shows under "From".
EVENT_SOURCE = "kuberank-operator"

LABEL_OWNER = "kuberank.dev/rerankerdeployment"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "kuberank-operator"

# Hash of the rendered object, so that an unchanged object is not applied again after a restart.
ANNOTATION_APPLIED_HASH = "kuberank.dev/applied-hash"
ANNOTATION_MODEL = "kuberank.dev/model"

INFERENCE_CONTAINER = "inference"
SIDECAR_CONTAINER = "gpu-sidecar"
INFERENCE_PORT = 8080
# Container port names in the pod template; the PodMonitor scrapes them by name.
INFERENCE_PORT_NAME = "http"
SIDECAR_PORT_NAME = "gpu-metrics"
SIDECAR_PORT = 9400
HANDSHAKE_DIR = "/var/run/kuberank"
HANDSHAKE_FILE = f"{HANDSHAKE_DIR}/device.json"
MODELS_DIR = "/models"


@dataclass(frozen=True)
class Owner:
    """The RerankerDeployment that children point back to."""

    namespace: str
    name: str
    uid: str
    generation: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def owner_reference(self) -> dict[str, object]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select the pods of one RerankerDeployment; never change them."""
    return {LABEL_OWNER: name}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def common_labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        LABEL_NAME: "kuberank-inference",
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: "inference",
        LABEL_PART_OF: "kuberank",
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def deployment_name(name: str) -> str:
    return name


def service_name(name: str) -> str:
    return name


def pdb_name(name: str) -> str:
    return name


def namespaced_ref(value: str, *, flag: str, hint: str) -> tuple[str, str]:
    """(namespace, name) of a flag's NAMESPACE/NAME; a ValueError naming the flag otherwise."""
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"{flag} is {value!r}; give it as NAMESPACE/NAME ({hint})")
    return namespace, name
