"""Render the objects one RerankerDeployment needs: Deployment, Service, PodDisruptionBudget.

Pure: a spec goes in, plain dicts ready for server-side apply come out. Every pod holds exactly
one GPU or MIG slice; the inference container and the GPU sidecar share an emptyDir on which the
inference server writes the device handshake the sidecar reads. Under --accelerator=none the
same pod runs the model on CPU: no GPU request, no GPU node selection or tolerations, and the
sidecar plays one fake card (its fake NVML backend), everything else unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kuberank_operator.model import naming
from kuberank_operator.model.naming import Owner
from kuberank_operator.model.specs import (
    GPU_LABEL_PREFIX,
    SIDECAR_IMAGE,
    Accelerator,
    BatchingSpec,
    ImageSpec,
    ModelSource,
    RerankerSpec,
)

HANDSHAKE_VOLUME = "device-handshake"
MODELS_VOLUME = "models"
TMP_VOLUME = "tmp"
POD_RESOURCES_VOLUME = "pod-resources"
POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources"
# The image's numeric non-root user (Dockerfile KUBERANK_UID).
NON_ROOT_UID = 65532
# Under --accelerator=none the sidecar plays this fake card, device 0 of the profile.
CPU_FAKE_PROFILE = "h100x1"
# Loading a large model onto a GPU can take minutes; the startup probe allows ten.
STARTUP_PROBE_PERIOD_S = 5
# A deleted pod leaves the Service's endpoints at once, but kube-proxy on every node takes a
# moment to drop it: the server keeps serving that long (preStop) before SIGTERM starts its drain.
PRE_STOP_SLEEP_S = 5
STARTUP_PROBE_FAILURES = 120


@dataclass(frozen=True)
class RenderOptions:
    """Operator-wide rendering choices (from operator flags), the same for every resource."""

    # Mount the kubelet pod-resources socket into the sidecar so it resolves its device exactly.
    sidecar_pod_resources: bool = False
    # The sidecar runs the operator's own image (--sidecar-image), never one a RerankerDeployment
    # names: with GPU tuning it is root with CAP_SYS_ADMIN.
    sidecar_image: str = SIDECAR_IMAGE
    sidecar_image_pull_policy: str = ImageSpec().pull_policy
    # nvidia: one GPU or MIG slice per pod; none: CPU, the sidecar on its fake NVML backend.
    accelerator: Accelerator = "nvidia"

    @property
    def cpu_only(self) -> bool:
        return self.accelerator == "none"


def _container_port(name: str, number: int) -> dict[str, Any]:
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def _env(name: str, value: object) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def model_dir(source: ModelSource) -> str:
    """Where the inference server finds the weights inside its container."""
    if source.kind == "hostPath" or not source.path:
        return naming.MODELS_DIR
    return f"{naming.MODELS_DIR}/{source.path.strip('/')}"


def _models_volume(source: ModelSource) -> dict[str, Any]:
    if source.kind == "pvc":
        return {
            "name": MODELS_VOLUME,
            "persistentVolumeClaim": {"claimName": source.location, "readOnly": source.read_only},
        }
    if source.kind == "hostPath":
        return {"name": MODELS_VOLUME, "hostPath": {"path": source.location, "type": "Directory"}}
    return {
        "name": MODELS_VOLUME,
        "image": {"reference": source.location, "pullPolicy": source.pull_policy},
    }


def inference_env(spec: RerankerSpec, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """Environment of the inference server: each KUBERANK_FOO_BAR sets its --foo-bar flag."""
    cpu_only = (options or RenderOptions()).cpu_only
    env = [
        _env("KUBERANK_PORT", naming.INFERENCE_PORT),
        _env("KUBERANK_MODEL", model_dir(spec.model.source)),
        _env("KUBERANK_MODEL_ID", spec.model.id),
        _env("KUBERANK_TASK", spec.model.task),
        _env("KUBERANK_DTYPE", spec.model.dtype),
        _env("KUBERANK_DEVICE", "cpu" if cpu_only else "cuda"),
        _env("KUBERANK_MAX_INPUT_LENGTH", spec.model.max_length),
        _env("KUBERANK_MAX_BATCH_REQUESTS", spec.batching.max_batch_requests),
        _env("KUBERANK_MAX_CONCURRENT_PAIRS", spec.batching.max_concurrent_pairs),
        _env("KUBERANK_MAX_CLIENT_BATCH_SIZE", spec.batching.max_client_batch_size),
        *batching_env(spec.batching),
        _env("KUBERANK_VRAM_SAFETY_MARGIN", spec.gpu.vram_safety_margin),
        _env("KUBERANK_DEVICE_HANDSHAKE_FILE", naming.HANDSHAKE_FILE),
        # Weights come from the mounted source only, never from a hub at run time.
        _env("HF_HUB_OFFLINE", 1),
        _env("TRANSFORMERS_OFFLINE", 1),
        _env("HF_HOME", "/tmp/hf"),
    ]
    if spec.api_auth.enabled:
        env.append(
            {
                "name": "KUBERANK_API_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": spec.api_auth.secret_name, "key": spec.api_auth.key}
                },
            }
        )
    return env


def batching_env(batching: BatchingSpec) -> list[dict[str, Any]]:
    """The settings the server would otherwise choose itself (calibration, CPU quota): each is
    rendered only when the spec sets it, so that a 0 or empty list leaves the server's own."""
    calibration = batching.calibration
    env = [] if calibration.mode == "auto" else [_env("KUBERANK_CALIBRATION", calibration.mode)]
    if not batching.tokenizer_processes:
        env.append(_env("KUBERANK_TOKENIZER_PROCESSES", "off"))
    chosen = (
        ("KUBERANK_MAX_BATCH_TOKENS", batching.max_batch_tokens),
        ("KUBERANK_BATCHES_IN_FLIGHT", batching.batches_in_flight),
        ("KUBERANK_TOKENIZATION_WORKERS", batching.tokenization_workers),
        ("KUBERANK_CALIBRATION_SECONDS", calibration.time_limit_seconds),
    )
    env.extend(_env(name, value) for name, value in chosen if value)
    lists = (
        ("KUBERANK_CALIBRATION_BUDGETS", calibration.budgets),
        ("KUBERANK_CALIBRATION_BATCHES_IN_FLIGHT", calibration.batches_in_flight),
    )
    env.extend(_env(name, ",".join(map(str, values))) for name, values in lists if values)
    return env


def mounts_pod_resources(spec: RerankerSpec, options: RenderOptions) -> bool:
    """Tuning always gets the socket: the sidecar must prove no other pod shares the GPU. On CPU
    the pod holds no device the kubelet could list."""
    if options.cpu_only:
        return False
    return spec.sidecar.enabled and (options.sidecar_pod_resources or spec.gpu.tuning_requested)


def sidecar_env(spec: RerankerSpec, options: RenderOptions) -> list[dict[str, Any]]:
    """Environment of the GPU sidecar: its flags, the pod's identity and NVML-only GPU access."""
    env = [
        _env("KUBERANK_PORT", naming.SIDECAR_PORT),
        _env("KUBERANK_DEVICE_HANDSHAKE_FILE", naming.HANDSHAKE_FILE),
        _env("KUBERANK_INTERVAL", spec.sidecar.interval_seconds),
        _env("KUBERANK_VRAM_SAFETY_MARGIN", spec.gpu.vram_safety_margin),
        _env("KUBERANK_CONTAINER_NAME", naming.INFERENCE_CONTAINER),
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("KUBERANK_POD_NAME", "metadata.name"),
        _field_env("KUBERANK_POD_NAMESPACE", "metadata.namespace"),
        _field_env("NODE_NAME", "spec.nodeName"),
    ]
    if options.cpu_only:
        # No GPU, no driver: one scripted card stands for the device the pod would hold, so
        # the metrics, labels and tuning plumbing are the production ones. Tuning it touches
        # no hardware, so no pod-resources proof of exclusivity is needed (or possible).
        env += [
            _env("KUBERANK_BACKEND", "fake"),
            _env("KUBERANK_FAKE_PROFILE", CPU_FAKE_PROFILE),
            _env("KUBERANK_DEVICES", "0"),
        ]
        if spec.gpu.tuning_requested:
            env.append(_env("KUBERANK_TUNING_ASSUME_EXCLUSIVE", "true"))
    else:
        # NVML needs the driver's device nodes; the sidecar holds no GPU of its own and
        # exports only the device its pod was given (pod-resources API or handshake file).
        env += [
            _env("NVIDIA_VISIBLE_DEVICES", "all"),
            _env("NVIDIA_DRIVER_CAPABILITIES", "utility"),
        ]
    if mounts_pod_resources(spec, options):
        env.append(_env("KUBERANK_POD_RESOURCES_SOCKET", f"{POD_RESOURCES_DIR}/kubelet.sock"))
    gpu = spec.gpu
    if gpu.power_limit_watts > 0:
        env.append(_env("KUBERANK_POWER_LIMIT_WATTS", gpu.power_limit_watts))
    clocks = gpu.locked_clocks
    if clocks.graphics_min_mhz or clocks.graphics_max_mhz:
        env.append(
            _env(
                "KUBERANK_GPU_LOCKED_CLOCKS",
                f"{clocks.graphics_min_mhz}:{clocks.graphics_max_mhz}",
            )
        )
    if clocks.memory_mhz:
        env.append(
            _env("KUBERANK_MEMORY_LOCKED_CLOCKS", f"{clocks.memory_mhz}:{clocks.memory_mhz}")
        )
    return env


def _restricted_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def sidecar_security_context(
    spec: RerankerSpec, options: RenderOptions | None = None
) -> dict[str, Any]:
    """CAP_SYS_ADMIN only when tuning is asked for; NVML's setters need it and root (the fake
    card of --accelerator=none needs neither)."""
    if not spec.gpu.tuning_requested or (options or RenderOptions()).cpu_only:
        return _restricted_security_context()
    # Kubernetes grants added capabilities to root only (no ambient capabilities for others).
    return {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
    }


def _gpu_resources(spec: RerankerSpec, options: RenderOptions) -> dict[str, Any]:
    requests = dict(spec.resources.get("requests") or {})
    limits = dict(spec.resources.get("limits") or {})
    if options.cpu_only:
        # spec.resources as written, minus any extended GPU resource a manifest names itself.
        return {
            "requests": {k: v for k, v in requests.items() if not k.startswith(GPU_LABEL_PREFIX)},
            "limits": {k: v for k, v in limits.items() if not k.startswith(GPU_LABEL_PREFIX)},
        }
    # Extended resources must be equal in requests and limits: exactly one device per pod.
    requests[spec.gpu.resource_name] = 1
    limits[spec.gpu.resource_name] = 1
    return {"requests": requests, "limits": limits}


def _http_probe(
    path: str, port: str, *, period: int, failures: int, timeout: int = 3
) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def inference_container(spec: RerankerSpec, options: RenderOptions | None = None) -> dict[str, Any]:
    opts = options or RenderOptions()
    return {
        "name": naming.INFERENCE_CONTAINER,
        "image": spec.image.reference,
        "imagePullPolicy": spec.image.pull_policy,
        "command": ["kuberank-inference"],
        "env": inference_env(spec, opts),
        "ports": [_container_port(naming.INFERENCE_PORT_NAME, naming.INFERENCE_PORT)],
        "resources": _gpu_resources(spec, opts),
        "startupProbe": _http_probe(
            "/ready", "http", period=STARTUP_PROBE_PERIOD_S, failures=STARTUP_PROBE_FAILURES
        ),
        "readinessProbe": _http_probe("/ready", "http", period=5, failures=2),
        "livenessProbe": _http_probe("/health", "http", period=10, failures=3, timeout=5),
        # the kubelet's own sleep (Kubernetes 1.30+): no shell or sleep binary in the image
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_S}}},
        "volumeMounts": [
            {"name": HANDSHAKE_VOLUME, "mountPath": naming.HANDSHAKE_DIR},
            {"name": MODELS_VOLUME, "mountPath": naming.MODELS_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "securityContext": _restricted_security_context(),
    }


def sidecar_container(spec: RerankerSpec, options: RenderOptions) -> dict[str, Any]:
    # Writable: the sidecar keeps its tuning journal beside the handshake, to restore the card
    # after a crash of its own container.
    mounts: list[dict[str, Any]] = [
        {"name": HANDSHAKE_VOLUME, "mountPath": naming.HANDSHAKE_DIR},
    ]
    if mounts_pod_resources(spec, options):
        mounts.append(
            {"name": POD_RESOURCES_VOLUME, "mountPath": POD_RESOURCES_DIR, "readOnly": True}
        )
    return {
        "name": naming.SIDECAR_CONTAINER,
        "image": options.sidecar_image,
        "imagePullPolicy": options.sidecar_image_pull_policy,
        "command": ["kuberank-sidecar"],
        "env": sidecar_env(spec, options),
        "ports": [_container_port(naming.SIDECAR_PORT_NAME, naming.SIDECAR_PORT)],
        "resources": {k: dict(v) for k, v in spec.sidecar.resources.items()},
        # No readiness probe: a telemetry hiccup must not take the pod out of the Service.
        "livenessProbe": _http_probe("/healthz", "gpu-metrics", period=10, failures=3),
        "volumeMounts": mounts,
        "securityContext": sidecar_security_context(spec, options),
    }


def pod_annotations(spec: RerankerSpec) -> dict[str, str]:
    return {**spec.pod_annotations, naming.ANNOTATION_MODEL: spec.model.id}


def _volumes(spec: RerankerSpec, options: RenderOptions) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": HANDSHAKE_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        _models_volume(spec.model.source),
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "2Gi"}},
    ]
    if mounts_pod_resources(spec, options):
        volumes.append(
            {
                "name": POD_RESOURCES_VOLUME,
                "hostPath": {"path": POD_RESOURCES_DIR, "type": "Directory"},
            }
        )
    return volumes


def _placement(
    spec: RerankerSpec, options: RenderOptions
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """nodeSelector and tolerations; on CPU without the GPU nodes' labels and taints
    (nvidia.com/…), which no CPU node carries."""
    selector = dict(spec.node_selector)
    tolerations = [dict(t) for t in spec.tolerations]
    if options.cpu_only:
        selector = {k: v for k, v in selector.items() if not k.startswith(GPU_LABEL_PREFIX)}
        tolerations = [
            t for t in tolerations if not str(t.get("key") or "").startswith(GPU_LABEL_PREFIX)
        ]
    return selector, tolerations


def pod_spec(spec: RerankerSpec, *, name: str, options: RenderOptions) -> dict[str, Any]:
    containers = [inference_container(spec, options)]
    if spec.sidecar.enabled:
        containers.append(sidecar_container(spec, options))
    pod: dict[str, Any] = {
        "containers": containers,
        "volumes": _volumes(spec, options),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        # preStop, then the server's drain on SIGTERM (requests in flight finish, keep-alive
        # clients are told to reconnect), well inside the grace period.
        "terminationGracePeriodSeconds": 60,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "topologySpreadConstraints": [
            {
                "maxSkew": spec.topology_spread.max_skew,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": spec.topology_spread.when_unsatisfiable,
                "labelSelector": {"matchLabels": naming.selector_labels(name)},
            }
        ],
    }
    node_selector, tolerations = _placement(spec, options)
    if node_selector:
        pod["nodeSelector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    if spec.affinity:
        pod["affinity"] = dict(spec.affinity)
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.image.pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in spec.image.pull_secrets]
    return pod


def _metadata(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": naming.common_labels(owner.name),
        "ownerReferences": [owner.owner_reference()],
    }


def render_deployment(
    owner: Owner, spec: RerankerSpec, *, options: RenderOptions | None = None
) -> dict[str, Any]:
    opts = options or RenderOptions()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, naming.deployment_name(owner.name)),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": naming.selector_labels(owner.name)},
            "revisionHistoryLimit": 3,
            # A model download into a cold node plus GPU load can be slow; count it as progress.
            "progressDeadlineSeconds": 900,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": spec.rollout.max_surge,
                    "maxUnavailable": spec.rollout.max_unavailable,
                },
            },
            "template": {
                "metadata": {
                    "labels": naming.common_labels(owner.name),
                    "annotations": pod_annotations(spec),
                },
                "spec": pod_spec(spec, name=owner.name, options=opts),
            },
        },
    }


def render_service(owner: Owner, spec: RerankerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, naming.service_name(owner.name)),
        "spec": {
            "type": spec.service.type,
            "selector": naming.selector_labels(owner.name),
            "ports": [
                {
                    "name": "http",
                    "port": spec.service.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }


def render_pdb(owner: Owner, spec: RerankerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, naming.pdb_name(owner.name)),
        "spec": {
            "maxUnavailable": spec.rollout.max_unavailable,
            "selector": {"matchLabels": naming.selector_labels(owner.name)},
            # A crash-looping pod must never block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def content_hash(obj: Mapping[str, Any]) -> str:
    """A stable digest of a rendered object (before the hash annotation is added)."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with its content hash in metadata.annotations."""
    digest = content_hash(obj)
    meta = dict(obj["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), naming.ANNOTATION_APPLIED_HASH: digest}
    return {**obj, "metadata": meta}


def render_children(
    owner: Owner, spec: RerankerSpec, *, options: RenderOptions | None = None
) -> tuple[dict[str, Any], ...]:
    """Every object of one RerankerDeployment, each annotated with its content hash."""
    return tuple(
        with_hash(obj)
        for obj in (
            render_deployment(owner, spec, options=options),
            render_service(owner, spec),
            render_pdb(owner, spec),
        )
    )
