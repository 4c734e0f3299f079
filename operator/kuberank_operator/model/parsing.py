"""Parse a RerankerDeployment's spec into the typed values of specs.py.

Every default comes from the dataclass fields in specs.py (`default_of` or a default instance):
none is written here. A field of the wrong type raises SpecError naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kuberank_operator.model.specs import (
    ApiAuthSpec,
    AutoscalingSpec,
    BatchingSpec,
    CalibrationMode,
    CalibrationSpec,
    GpuSpec,
    ImageSpec,
    LockedClocks,
    ModelSource,
    ModelSpec,
    MonitoringSpec,
    OomSpec,
    RerankerSpec,
    RolloutSpec,
    ScaleDownSpec,
    ScaleUpSpec,
    ServiceSpec,
    SidecarSpec,
    SpecError,
    TopologySpreadSpec,
    default_of,
)


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
            path=_str(body, "path", default_of(ModelSource, "path"), sub),
            read_only=_bool(body, "readOnly", default_of(ModelSource, "read_only"), sub),
        )
    if kind == "hostPath":
        return ModelSource(kind="hostPath", location=_str(body, "path", "", sub))
    return ModelSource(
        kind="image",
        location=_str(body, "reference", "", sub),
        path=_str(body, "path", default_of(ModelSource, "path"), sub),
        pull_policy=_str(body, "pullPolicy", default_of(ModelSource, "pull_policy"), sub),
    )


def _parse_model(raw: Mapping[str, Any]) -> ModelSpec:
    where = "spec.model"
    model_id = _str(raw, "id", "", where)
    if not model_id:
        raise SpecError("spec.model.id is required: name the model, e.g. BAAI/bge-reranker-v2-m3")
    task = _str(raw, "task", default_of(ModelSpec, "task"), where)
    if task not in ("rerank", "embed"):
        raise SpecError(f"spec.model.task must be rerank or embed, got {task!r}")
    return ModelSpec(
        id=model_id,
        source=_parse_source(_section(raw, "source", where)),
        task="rerank" if task == "rerank" else "embed",
        dtype=_str(raw, "dtype", default_of(ModelSpec, "dtype"), where),
        max_length=_int(raw, "maxLength", default_of(ModelSpec, "max_length"), where),
    )


def _parse_gpu(raw: Mapping[str, Any]) -> GpuSpec:
    where = "spec.gpu"
    clocks = _section(raw, "lockedClocks", where)
    cw = f"{where}.lockedClocks"
    d, dc = GpuSpec(), LockedClocks()
    return GpuSpec(
        resource_name=_str(raw, "resourceName", d.resource_name, where),
        power_limit_watts=_int(raw, "powerLimitWatts", d.power_limit_watts, where),
        locked_clocks=LockedClocks(
            graphics_min_mhz=_int(clocks, "graphicsMinMHz", dc.graphics_min_mhz, cw),
            graphics_max_mhz=_int(clocks, "graphicsMaxMHz", dc.graphics_max_mhz, cw),
            memory_mhz=_int(clocks, "memoryMHz", dc.memory_mhz, cw),
        ),
        vram_safety_margin=_float(raw, "vramSafetyMargin", d.vram_safety_margin, where),
    )


def _int_list(raw: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise SpecError(f"{where}.{key} must be a list of positive integers, got {value!r}")
    return tuple(value)


def _calibration_mode(mode: str, where: str) -> CalibrationMode:
    if mode == "on":
        return "on"
    if mode == "off":
        return "off"
    if mode == "auto":
        return "auto"
    raise SpecError(f"{where}.mode must be auto, on or off, got {mode!r}")


def _parse_calibration(raw: Mapping[str, Any]) -> CalibrationSpec:
    where = "spec.batching.calibration"
    d = CalibrationSpec()
    return CalibrationSpec(
        mode=_calibration_mode(_str(raw, "mode", d.mode, where), where),
        time_limit_seconds=_float(raw, "timeLimitSeconds", d.time_limit_seconds, where),
        budgets=_int_list(raw, "budgets", where),
        batches_in_flight=_int_list(raw, "batchesInFlight", where),
    )


def _parse_autoscaling(raw: Mapping[str, Any]) -> AutoscalingSpec:
    where = "spec.autoscaling"
    d, du, dd = AutoscalingSpec(), ScaleUpSpec(), ScaleDownSpec()
    mode = _str(raw, "mode", d.mode, where)
    if mode not in ("builtin", "external", "off"):
        raise SpecError(f"{where}.mode must be builtin, external or off, got {mode!r}")
    up = _section(raw, "scaleUp", where)
    down = _section(raw, "scaleDown", where)
    uw, dw = f"{where}.scaleUp", f"{where}.scaleDown"
    return AutoscalingSpec(
        mode="builtin" if mode == "builtin" else "external" if mode == "external" else "off",
        min_replicas=_int(raw, "minReplicas", d.min_replicas, where),
        max_replicas=_int(raw, "maxReplicas", d.max_replicas, where),
        cooldown_seconds=_int(raw, "cooldownSeconds", d.cooldown_seconds, where),
        interval_seconds=_int(raw, "intervalSeconds", d.interval_seconds, where),
        scale_up=ScaleUpSpec(
            queue_depth=_int(up, "queueDepth", du.queue_depth, uw),
            p99_latency_ms=_int(up, "p99LatencyMs", du.p99_latency_ms, uw),
            gpu_utilization=_int(up, "gpuUtilization", du.gpu_utilization, uw),
            for_seconds=_int(up, "forSeconds", du.for_seconds, uw),
            queue_tokens=_int(up, "queueTokens", du.queue_tokens, uw),
        ),
        scale_down=ScaleDownSpec(
            gpu_utilization=_int(down, "gpuUtilization", dd.gpu_utilization, dw),
            for_seconds=_int(down, "forSeconds", dd.for_seconds, dw),
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
    di, db, do, dm = ImageSpec(), BatchingSpec(), OomSpec(), MonitoringSpec()
    da, ds, dsv = ApiAuthSpec(), SidecarSpec(), ServiceSpec()
    dt, dr = TopologySpreadSpec(), RolloutSpec()
    return RerankerSpec(
        model=_parse_model(_section(raw, "model", where)),
        image=ImageSpec(
            repository=_str(image, "repository", di.repository, iw),
            tag=_str(image, "tag", di.tag, iw),
            pull_policy=_str(image, "pullPolicy", di.pull_policy, iw),
            pull_secrets=tuple(str(s) for s in pull_secrets),
        ),
        replicas=_int(raw, "replicas", default_of(RerankerSpec, "replicas"), where),
        gpu=_parse_gpu(_section(raw, "gpu", where)),
        batching=BatchingSpec(
            max_batch_tokens=_int(batching, "maxBatchTokens", db.max_batch_tokens, bw),
            max_batch_requests=_int(batching, "maxBatchRequests", db.max_batch_requests, bw),
            max_concurrent_pairs=_int(batching, "maxConcurrentPairs", db.max_concurrent_pairs, bw),
            max_client_batch_size=_int(
                batching, "maxClientBatchSize", db.max_client_batch_size, bw
            ),
            batches_in_flight=_int(batching, "batchesInFlight", db.batches_in_flight, bw),
            tokenization_workers=_int(batching, "tokenizationWorkers", db.tokenization_workers, bw),
            tokenizer_processes=_bool(batching, "tokenizerProcesses", db.tokenizer_processes, bw),
            calibration=_parse_calibration(_section(batching, "calibration", bw)),
        ),
        autoscaling=_parse_autoscaling(_section(raw, "autoscaling", where)),
        oom=OomSpec(
            max_events=_int(oom, "maxEvents", do.max_events, ow),
            window_seconds=_int(oom, "windowSeconds", do.window_seconds, ow),
            max_restarts_per_hour=_int(oom, "maxRestartsPerHour", do.max_restarts_per_hour, ow),
        ),
        monitoring=MonitoringSpec(
            pod_monitor=_bool(monitoring, "podMonitor", dm.pod_monitor, mw),
            prometheus_rule=_bool(monitoring, "prometheusRule", dm.prometheus_rule, mw),
            alert_webhook=_bool(monitoring, "alertWebhook", dm.alert_webhook, mw),
            labels=_str_map(monitoring, "labels", mw),
        ),
        api_auth=ApiAuthSpec(
            secret_name=_str(auth, "secretName", da.secret_name, aw),
            key=_str(auth, "key", da.key, aw),
        ),
        resources=dict(raw["resources"])
        if isinstance(raw.get("resources"), Mapping)
        else default_of(RerankerSpec, "resources"),
        sidecar=SidecarSpec(
            enabled=_bool(sidecar, "enabled", ds.enabled, sw),
            interval_seconds=_float(sidecar, "intervalSeconds", ds.interval_seconds, sw),
            resources=dict(sidecar["resources"])
            if isinstance(sidecar.get("resources"), Mapping)
            else default_of(SidecarSpec, "resources"),
        ),
        service=ServiceSpec(
            type=_str(service, "type", dsv.type, svw),
            port=_int(service, "port", dsv.port, svw),
        ),
        node_selector=_str_map(raw, "nodeSelector", where),
        tolerations=tuple(dict(t) for t in tolerations),
        affinity=dict(_section(raw, "affinity", where)),
        topology_spread=TopologySpreadSpec(
            max_skew=_int(spread, "maxSkew", dt.max_skew, tw),
            when_unsatisfiable=_str(spread, "whenUnsatisfiable", dt.when_unsatisfiable, tw),
        ),
        rollout=RolloutSpec(
            max_surge=_int_or_str(rollout, "maxSurge", dr.max_surge, rw),
            max_unavailable=_int_or_str(rollout, "maxUnavailable", dr.max_unavailable, rw),
        ),
        priority_class_name=_str(
            raw, "priorityClassName", default_of(RerankerSpec, "priority_class_name"), where
        ),
        pod_annotations=_str_map(raw, "podAnnotations", where),
    )
