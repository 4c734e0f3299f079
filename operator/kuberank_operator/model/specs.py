"""The RerankerDeployment spec as typed, immutable values, and the one home of its defaults.

Every default is the default of a dataclass field here; the parser (parsing.py) reads them from
here and writes none of its own, the alert rules' default thresholds are derived from them, and
a unit test walks every `default:` of crds/rerankerdeployments.kuberank.dev.yaml and compares it
with the field here. The API server applies the CRD's defaults before the operator sees an
object; the parser applies the same ones so that an object stored before a default was added
still parses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SourceKind = Literal["pvc", "hostPath", "image"]
AutoscalingMode = Literal["builtin", "external", "off"]
CalibrationMode = Literal["auto", "on", "off"]
# What inference pods compute on, operator-wide (--accelerator): nvidia requests one GPU or MIG
# slice per pod (spec.gpu.resourceName); none runs the model on CPU with the sidecar on its fake
# NVML backend, for clusters without GPUs (kind, minikube), never the default.
Accelerator = Literal["nvidia", "none"]
ACCELERATORS: tuple[Accelerator, ...] = ("nvidia", "none")
# status.accelerator (and the Accelerator column of `kubectl get rrd`) under --accelerator=none.
CPU_ONLY = "cpu"
# Node labels and taint keys of GPU nodes: dropped from nodeSelector and tolerations on CPU.
GPU_LABEL_PREFIX = "nvidia.com/"


def accelerator_shown(accelerator: Accelerator, resource_name: str) -> str:
    """status.accelerator: the extended resource each pod holds one of, or cpu."""
    return CPU_ONLY if accelerator == "none" else resource_name


# How long a pod may stay stuck after a critical XID before it is restarted: operator-wide, not
# a spec field; the builtin evaluator and the alert rules both use it.
STUCK_SECONDS = 120.0


class SpecError(ValueError):
    """A spec the operator cannot act on; the message names the field and the fix."""


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    # pvc: the claim; hostPath: the node directory; image: the image reference.
    location: str
    path: str = ""
    read_only: bool = True
    pull_policy: str = "IfNotPresent"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    source: ModelSource
    task: Literal["rerank", "embed"] = "rerank"
    dtype: str = "bfloat16"
    max_length: int = 512


# The two images ./Dockerfile builds (hack/build-images.sh, `make images`): the operator's, which
# also runs every pod's sidecar and holds no torch, and the inference server's.
OPERATOR_IMAGE_REPOSITORY = "ghcr.io/kuberank/kuberank-operator"
INFERENCE_IMAGE_REPOSITORY = "ghcr.io/kuberank/kuberank-inference"
IMAGE_TAG = "0.1.0"


@dataclass(frozen=True)
class ImageSpec:
    repository: str = INFERENCE_IMAGE_REPOSITORY
    tag: str = IMAGE_TAG
    pull_policy: str = "IfNotPresent"
    pull_secrets: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        # A digest is written repository@sha256:…, a tag repository:tag.
        sep = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.repository}{sep}{self.tag}"


# --sidecar-image's default: the operator's own image (the chart passes its image.*).
SIDECAR_IMAGE = f"{OPERATOR_IMAGE_REPOSITORY}:{IMAGE_TAG}"


@dataclass(frozen=True)
class LockedClocks:
    graphics_min_mhz: int = 0
    graphics_max_mhz: int = 0
    memory_mhz: int = 0

    @property
    def requested(self) -> bool:
        return bool(self.graphics_min_mhz or self.graphics_max_mhz or self.memory_mhz)


@dataclass(frozen=True)
class GpuSpec:
    resource_name: str = "nvidia.com/gpu"
    power_limit_watts: int = 0
    locked_clocks: LockedClocks = field(default_factory=LockedClocks)
    vram_safety_margin: float = 0.1

    @property
    def is_mig(self) -> bool:
        return self.resource_name.startswith("nvidia.com/mig-")

    @property
    def tuning_requested(self) -> bool:
        return self.power_limit_watts > 0 or self.locked_clocks.requested


@dataclass(frozen=True)
class CalibrationSpec:
    """The inference server's start-up calibration; 0 and empty lists leave its own defaults."""

    # auto: on for a GPU pod, off on CPU (the server's own --calibration auto)
    mode: CalibrationMode = "auto"
    time_limit_seconds: float = 0.0
    budgets: tuple[int, ...] = ()
    batches_in_flight: tuple[int, ...] = ()


@dataclass(frozen=True)
class BatchingSpec:
    """0 leaves a setting to the server: max_batch_tokens and batches_in_flight to its start-up
    calibration (or its own default when calibration is off), tokenization_workers to its
    container's CPU quota."""

    max_batch_tokens: int = 0
    max_batch_requests: int = 512
    max_concurrent_pairs: int = 8192
    max_client_batch_size: int = 1000
    batches_in_flight: int = 0
    tokenization_workers: int = 0
    tokenizer_processes: bool = True  # False: the server's threads (less memory)
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)


@dataclass(frozen=True)
class ScaleUpSpec:
    queue_depth: int = 512
    p99_latency_ms: int = 500
    gpu_utilization: int = 85
    for_seconds: int = 60
    queue_tokens: int = 0  # 0: off


@dataclass(frozen=True)
class ScaleDownSpec:
    gpu_utilization: int = 30
    for_seconds: int = 600


@dataclass(frozen=True)
class AutoscalingSpec:
    mode: AutoscalingMode = "off"
    min_replicas: int = 1
    max_replicas: int = 4
    cooldown_seconds: int = 300
    interval_seconds: int = 15
    scale_up: ScaleUpSpec = field(default_factory=ScaleUpSpec)
    scale_down: ScaleDownSpec = field(default_factory=ScaleDownSpec)


@dataclass(frozen=True)
class OomSpec:
    max_events: int = 3
    window_seconds: int = 600
    max_restarts_per_hour: int = 6


@dataclass(frozen=True)
class MonitoringSpec:
    pod_monitor: bool = False
    prometheus_rule: bool = False
    alert_webhook: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiAuthSpec:
    secret_name: str = ""
    key: str = "token"

    @property
    def enabled(self) -> bool:
        return bool(self.secret_name)


def _default_inference_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}


def _default_sidecar_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


@dataclass(frozen=True)
class SidecarSpec:
    enabled: bool = True
    interval_seconds: float = 15.0
    resources: Mapping[str, Any] = field(default_factory=_default_sidecar_resources)


@dataclass(frozen=True)
class ServiceSpec:
    type: str = "ClusterIP"
    port: int = 8080


@dataclass(frozen=True)
class TopologySpreadSpec:
    max_skew: int = 1
    when_unsatisfiable: str = "ScheduleAnyway"


@dataclass(frozen=True)
class RolloutSpec:
    max_surge: int | str = 0
    max_unavailable: int | str = 1


@dataclass(frozen=True)
class RerankerSpec:
    model: ModelSpec
    image: ImageSpec = field(default_factory=ImageSpec)
    replicas: int = 1
    gpu: GpuSpec = field(default_factory=GpuSpec)
    batching: BatchingSpec = field(default_factory=BatchingSpec)
    autoscaling: AutoscalingSpec = field(default_factory=AutoscalingSpec)
    oom: OomSpec = field(default_factory=OomSpec)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    api_auth: ApiAuthSpec = field(default_factory=ApiAuthSpec)
    resources: Mapping[str, Any] = field(default_factory=_default_inference_resources)
    sidecar: SidecarSpec = field(default_factory=SidecarSpec)
    service: ServiceSpec = field(default_factory=ServiceSpec)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    topology_spread: TopologySpreadSpec = field(default_factory=TopologySpreadSpec)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    priority_class_name: str = ""
    pod_annotations: Mapping[str, str] = field(default_factory=dict)


def default_of(cls: type[Any], name: str) -> Any:
    """The default of dataclass field `name` of `cls` (the one place a default is written)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name}")
