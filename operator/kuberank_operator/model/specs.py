"""The RerankerDeployment spec as typed, immutable values.

The API server applies the CRD's defaults before the operator sees an object; the same defaults
are repeated here so that an object stored before a default was added still parses, and a unit
test keeps both in step with crds/rerankerdeployments.kuberank.dev.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SourceKind = Literal["pvc", "hostPath", "image"]
AutoscalingMode = Literal["builtin", "external", "off"]


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


@dataclass(frozen=True)
class ImageSpec:
    repository: str = "ghcr.io/kuberank/kuberank"
    tag: str = "0.1.0"
    pull_policy: str = "IfNotPresent"
    pull_secrets: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        # A digest is written repository@sha256:…, a tag repository:tag.
        sep = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.repository}{sep}{self.tag}"


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
class BatchingSpec:
    max_batch_tokens: int = 16384
    max_batch_requests: int = 512
    max_concurrent_pairs: int = 8192
    max_client_batch_size: int = 1000


@dataclass(frozen=True)
class ScaleUpSpec:
    queue_depth: int = 512
    p99_latency_ms: int = 500
    gpu_utilization: int = 85
    for_seconds: int = 60


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


def _section(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}.{key} must be an object, got {type(value).__name__}")
    return value


def _int(raw: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}.{key} must be an integer, got {value!r}")
    return value


def _str(raw: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise SpecError(f"{where}.{key} must be a string, got {value!r}")
    return value


def _bool(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{where}.{key} must be true or false, got {value!r}")
    return value


def _float(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{where}.{key} must be a number, got {value!r}")
    return float(value)


def _int_or_str(raw: Mapping[str, Any], key: str, default: int | str, where: str) -> int | str:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpecError(f"{where}.{key} must be a count or a percentage, got {value!r}")
    return value


def _str_map(raw: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = _section(raw, key, where)
    return {str(k): str(v) for k, v in value.items()}


def _parse_source(raw: Mapping[str, Any]) -> ModelSource:
    where = "spec.model.source"
    present = [k for k in ("pvc", "hostPath", "image") if raw.get(k) is not None]
    if len(present) != 1:
        raise SpecError(f"{where} must set exactly one of pvc, hostPath or image (has {present})")
    kind = present[0]
    body = _section(raw, kind, where)
    sub = f"{where}.{kind}"
    if kind == "pvc":
        return ModelSource(
            kind="pvc",
            location=_str(body, "claimName", "", sub),
            path=_str(body, "path", "", sub),
            read_only=_bool(body, "readOnly", True, sub),
        )
    if kind == "hostPath":
        return ModelSource(kind="hostPath", location=_str(body, "path", "", sub))
    return ModelSource(
        kind="image",
        location=_str(body, "reference", "", sub),
        path=_str(body, "path", "", sub),
        pull_policy=_str(body, "pullPolicy", "IfNotPresent", sub),
    )


def _parse_model(raw: Mapping[str, Any]) -> ModelSpec:
    where = "spec.model"
    model_id = _str(raw, "id", "", where)
    if not model_id:
        raise SpecError("spec.model.id is required: name the model, e.g. BAAI/bge-reranker-v2-m3")
    task = _str(raw, "task", "rerank", where)
    if task not in ("rerank", "embed"):
        raise SpecError(f"spec.model.task must be rerank or embed, got {task!r}")
    return ModelSpec(
        id=model_id,
        source=_parse_source(_section(raw, "source", where)),
        task="rerank" if task == "rerank" else "embed",
        dtype=_str(raw, "dtype", "bfloat16", where),
        max_length=_int(raw, "maxLength", 512, where),
    )


def _parse_gpu(raw: Mapping[str, Any]) -> GpuSpec:
    where = "spec.gpu"
    clocks = _section(raw, "lockedClocks", where)
    cw = f"{where}.lockedClocks"
    return GpuSpec(
        resource_name=_str(raw, "resourceName", "nvidia.com/gpu", where),
        power_limit_watts=_int(raw, "powerLimitWatts", 0, where),
        locked_clocks=LockedClocks(
            graphics_min_mhz=_int(clocks, "graphicsMinMHz", 0, cw),
            graphics_max_mhz=_int(clocks, "graphicsMaxMHz", 0, cw),
            memory_mhz=_int(clocks, "memoryMHz", 0, cw),
        ),
        vram_safety_margin=_float(raw, "vramSafetyMargin", 0.1, where),
    )


def _parse_autoscaling(raw: Mapping[str, Any]) -> AutoscalingSpec:
    where = "spec.autoscaling"
    mode = _str(raw, "mode", "off", where)
    if mode not in ("builtin", "external", "off"):
        raise SpecError(f"{where}.mode must be builtin, external or off, got {mode!r}")
    up = _section(raw, "scaleUp", where)
    down = _section(raw, "scaleDown", where)
    uw, dw = f"{where}.scaleUp", f"{where}.scaleDown"
    return AutoscalingSpec(
        mode="builtin" if mode == "builtin" else "external" if mode == "external" else "off",
        min_replicas=_int(raw, "minReplicas", 1, where),
        max_replicas=_int(raw, "maxReplicas", 4, where),
        cooldown_seconds=_int(raw, "cooldownSeconds", 300, where),
        interval_seconds=_int(raw, "intervalSeconds", 15, where),
        scale_up=ScaleUpSpec(
            queue_depth=_int(up, "queueDepth", 512, uw),
            p99_latency_ms=_int(up, "p99LatencyMs", 500, uw),
            gpu_utilization=_int(up, "gpuUtilization", 85, uw),
            for_seconds=_int(up, "forSeconds", 60, uw),
        ),
        scale_down=ScaleDownSpec(
            gpu_utilization=_int(down, "gpuUtilization", 30, dw),
            for_seconds=_int(down, "forSeconds", 600, dw),
        ),
    )


def parse_spec(raw: Mapping[str, Any]) -> RerankerSpec:
    """Turn a RerankerDeployment's spec into typed values; raise SpecError naming the field."""
    where = "spec"
    if not isinstance(raw, Mapping):
        raise SpecError("spec must be an object")
    image = _section(raw, "image", where)
    iw = "spec.image"
    batching = _section(raw, "batching", where)
    bw = "spec.batching"
    oom = _section(raw, "oom", where)
    ow = "spec.oom"
    monitoring = _section(raw, "monitoring", where)
    mw = "spec.monitoring"
    auth = _section(raw, "apiAuth", where)
    aw = "spec.apiAuth"
    sidecar = _section(raw, "sidecar", where)
    sw = "spec.sidecar"
    service = _section(raw, "service", where)
    svw = "spec.service"
    spread = _section(raw, "topologySpread", where)
    tw = "spec.topologySpread"
    rollout = _section(raw, "rollout", where)
    rw = "spec.rollout"
    tolerations = raw.get("tolerations") or []
    if not isinstance(tolerations, list) or not all(isinstance(t, Mapping) for t in tolerations):
        raise SpecError("spec.tolerations must be a list of objects")
    pull_secrets = image.get("pullSecrets") or []
    if not isinstance(pull_secrets, list):
        raise SpecError("spec.image.pullSecrets must be a list of Secret names")
    return RerankerSpec(
        model=_parse_model(_section(raw, "model", where)),
        image=ImageSpec(
            repository=_str(image, "repository", "ghcr.io/kuberank/kuberank", iw),
            tag=_str(image, "tag", "0.1.0", iw),
            pull_policy=_str(image, "pullPolicy", "IfNotPresent", iw),
            pull_secrets=tuple(str(s) for s in pull_secrets),
        ),
        replicas=_int(raw, "replicas", 1, where),
        gpu=_parse_gpu(_section(raw, "gpu", where)),
        batching=BatchingSpec(
            max_batch_tokens=_int(batching, "maxBatchTokens", 16384, bw),
            max_batch_requests=_int(batching, "maxBatchRequests", 512, bw),
            max_concurrent_pairs=_int(batching, "maxConcurrentPairs", 8192, bw),
            max_client_batch_size=_int(batching, "maxClientBatchSize", 1000, bw),
        ),
        autoscaling=_parse_autoscaling(_section(raw, "autoscaling", where)),
        oom=OomSpec(
            max_events=_int(oom, "maxEvents", 3, ow),
            window_seconds=_int(oom, "windowSeconds", 600, ow),
            max_restarts_per_hour=_int(oom, "maxRestartsPerHour", 6, ow),
        ),
        monitoring=MonitoringSpec(
            pod_monitor=_bool(monitoring, "podMonitor", False, mw),
            prometheus_rule=_bool(monitoring, "prometheusRule", False, mw),
            alert_webhook=_bool(monitoring, "alertWebhook", False, mw),
            labels=_str_map(monitoring, "labels", mw),
        ),
        api_auth=ApiAuthSpec(
            secret_name=_str(auth, "secretName", "", aw),
            key=_str(auth, "key", "token", aw),
        ),
        resources=dict(raw["resources"])
        if isinstance(raw.get("resources"), Mapping)
        else _default_inference_resources(),
        sidecar=SidecarSpec(
            enabled=_bool(sidecar, "enabled", True, sw),
            interval_seconds=_float(sidecar, "intervalSeconds", 15.0, sw),
            resources=dict(sidecar["resources"])
            if isinstance(sidecar.get("resources"), Mapping)
            else _default_sidecar_resources(),
        ),
        service=ServiceSpec(
            type=_str(service, "type", "ClusterIP", svw),
            port=_int(service, "port", 8080, svw),
        ),
        node_selector=_str_map(raw, "nodeSelector", where),
        tolerations=tuple(dict(t) for t in tolerations),
        affinity=dict(_section(raw, "affinity", where)),
        topology_spread=TopologySpreadSpec(
            max_skew=_int(spread, "maxSkew", 1, tw),
            when_unsatisfiable=_str(spread, "whenUnsatisfiable", "ScheduleAnyway", tw),
        ),
        rollout=RolloutSpec(
            max_surge=_int_or_str(rollout, "maxSurge", 0, rw),
            max_unavailable=_int_or_str(rollout, "maxUnavailable", 1, rw),
        ),
        priority_class_name=_str(raw, "priorityClassName", "", where),
        pod_annotations=_str_map(raw, "podAnnotations", where),
    )
