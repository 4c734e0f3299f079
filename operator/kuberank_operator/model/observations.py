"""What the operator observes, reduced from raw API objects to the little it decides on.

Pure: the index functions in handlers.py call these on watched bodies and keep only the summaries,
so memory stays small with many pods and nodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kuberank_operator.model import naming

GPU_RESOURCE_PREFIX = "nvidia.com/"
# Waiting reasons that mean the image cannot be pulled.
IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName"})
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class ContainerProblem:
    """Why one container of one pod is unhealthy, in the Degraded condition's vocabulary."""

    reason: str  # OOMKilled, CrashLoopBackOff, ImagePullBackOff, ContainerConfigError
    container: str
    message: str
    restarts: int = 0
    # When the container was last OOM-killed (epoch seconds), for OOMKilled only.
    at: float | None = None


@dataclass(frozen=True)
class PodSummary:
    namespace: str
    name: str
    owner: str | None  # the RerankerDeployment named by the pod's owner label
    node_name: str
    phase: str
    ready: bool
    deleting: bool
    gpu_requests: tuple[tuple[str, int], ...]
    problems: tuple[ContainerProblem, ...] = ()
    unschedulable_message: str | None = None
    ip: str = ""

    @property
    def holds_devices(self) -> bool:
        """Bound to a node and not finished: its devices are taken."""
        return bool(self.node_name) and self.phase not in TERMINAL_PHASES

    def devices(self, resource_name: str) -> int:
        return sum(n for r, n in self.gpu_requests if r == resource_name)


@dataclass(frozen=True)
class NodeSummary:
    name: str
    labels: tuple[tuple[str, str], ...]
    taints: tuple[tuple[str, str, str], ...]  # (key, value, effect)
    allocatable: tuple[tuple[str, int], ...]  # nvidia.com/* resources only
    ready: bool
    unschedulable: bool

    def allocatable_of(self, resource_name: str) -> int:
        return sum(n for r, n in self.allocatable if r == resource_name)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class ChildSummary:
    """A Deployment, Service or PodDisruptionBudget the operator made."""

    kind: str
    namespace: str
    name: str
    owner: str
    owner_uid: str
    applied_hash: str
    # Deployment only; zero elsewhere.
    generation: int = 0
    observed_generation: int = 0
    spec_replicas: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    progress_deadline_exceeded: bool = False
    replica_failure: str | None = None


def parse_count(value: object) -> int:
    """An integer quantity such as '8' (device counts are always whole)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return 0


def parse_time(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def controller_owner(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the controlling RerankerDeployment, if this object has one."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == naming.KIND and ref.get("apiVersion", "").startswith(
            naming.GROUP + "/"
        ):
            return str(ref.get("name", "")), str(ref.get("uid", ""))
    return None


def _gpu_requests(spec: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """Devices a pod holds: the larger of its app containers' sum and any init container."""
    totals: dict[str, int] = {}
    for container in spec.get("containers") or []:
        for res, n in _container_devices(container).items():
            totals[res] = totals.get(res, 0) + n
    for container in spec.get("initContainers") or []:
        for res, n in _container_devices(container).items():
            totals[res] = max(totals.get(res, 0), n)
    return tuple(sorted((r, n) for r, n in totals.items() if n > 0))


def _container_devices(container: Mapping[str, Any]) -> dict[str, int]:
    resources = container.get("resources") or {}
    # Extended resources may be given as limits only; requests then equal limits.
    merged = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    return {
        k: parse_count(v)
        for k, v in merged.items()
        if isinstance(k, str) and k.startswith(GPU_RESOURCE_PREFIX)
    }


def _container_problem(status: Mapping[str, Any]) -> ContainerProblem | None:
    name = str(status.get("name", ""))
    restarts = parse_count(status.get("restartCount", 0))
    state = status.get("state") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    if terminated.get("reason") == "OOMKilled" or (waiting and last.get("reason") == "OOMKilled"):
        when = parse_time((terminated or last).get("finishedAt"))
        return ContainerProblem(
            reason="OOMKilled",
            container=name,
            message=f"container {name} was OOMKilled (exit 137, {restarts} restarts): "
            f"raise spec.resources.limits.memory or lower spec.batching.maxBatchTokens",
            restarts=restarts,
            at=when,
        )
    reason = str(waiting.get("reason", ""))
    if reason == "CrashLoopBackOff":
        exit_code = last.get("exitCode")
        detail = f", last exit code {exit_code}" if exit_code is not None else ""
        return ContainerProblem(
            reason="CrashLoopBackOff",
            container=name,
            message=f"container {name} is crash-looping ({restarts} restarts{detail})",
            restarts=restarts,
        )
    if reason in IMAGE_PULL_REASONS:
        return ContainerProblem(
            reason="ImagePullBackOff",
            container=name,
            message=f"container {name} cannot pull its image ({reason}): "
            f"check spec.image and spec.image.pullSecrets",
        )
    if reason in CONFIG_ERROR_REASONS:
        detail = str(waiting.get("message", "")).strip()
        return ContainerProblem(
            reason="ContainerConfigError",
            container=name,
            message=f"container {name} cannot start ({reason}){': ' + detail if detail else ''}",
        )
    return None


def summarize_pod(body: Mapping[str, Any]) -> PodSummary:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    unschedulable = next(
        (
            str(c.get("message") or "no node fits the pod")
            for c in conditions
            if c.get("type") == "PodScheduled"
            and c.get("status") == "False"
            and c.get("reason") == "Unschedulable"
        ),
        None,
    )
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    problems = tuple(p for p in (_container_problem(s) for s in statuses) if p is not None)
    labels = meta.get("labels") or {}
    owner = labels.get(naming.LABEL_OWNER)
    return PodSummary(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        owner=str(owner) if owner else None,
        node_name=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or "Pending"),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        gpu_requests=_gpu_requests(spec),
        problems=problems,
        unschedulable_message=unschedulable,
        ip=str(status.get("podIP") or ""),
    )


def summarize_node(body: Mapping[str, Any]) -> NodeSummary:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    allocatable = status.get("allocatable") or {}
    conditions = status.get("conditions") or []
    # A node that has not reported yet has no Ready condition; kwok reports at once.
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return NodeSummary(
        name=str(meta.get("name", "")),
        labels=tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items())),
        taints=tuple(
            (str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "")))
            for t in spec.get("taints") or []
        ),
        allocatable=tuple(
            sorted(
                (str(k), parse_count(v))
                for k, v in allocatable.items()
                if str(k).startswith(GPU_RESOURCE_PREFIX)
            )
        ),
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
    )


def summarize_child(body: Mapping[str, Any]) -> ChildSummary | None:
    """A Deployment, Service or PodDisruptionBudget controlled by a RerankerDeployment, or None."""
    meta = body.get("metadata") or {}
    owner = controller_owner(meta)
    if owner is None:
        return None
    kind = str(body.get("kind", ""))
    annotations = meta.get("annotations") or {}
    base = ChildSummary(
        kind=kind,
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        owner=owner[0],
        owner_uid=owner[1],
        applied_hash=str(annotations.get(naming.ANNOTATION_APPLIED_HASH, "")),
    )
    if kind != "Deployment":
        return base
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    deadline = any(
        c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
        for c in conditions
    )
    failure = next(
        (
            str(c.get("message") or c.get("reason") or "ReplicaFailure")
            for c in conditions
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
        ),
        None,
    )
    return dataclasses.replace(
        base,
        generation=parse_count(meta.get("generation", 0)),
        observed_generation=parse_count(status.get("observedGeneration", 0)),
        spec_replicas=parse_count(spec.get("replicas", 1)),
        replicas=parse_count(status.get("replicas", 0)),
        ready_replicas=parse_count(status.get("readyReplicas", 0)),
        updated_replicas=parse_count(status.get("updatedReplicas", 0)),
        available_replicas=parse_count(status.get("availableReplicas", 0)),
        progress_deadline_exceeded=deadline,
        replica_failure=failure,
    )


def scraped_pods(pods: Iterable[PodSummary]) -> list[PodSummary]:
    """The pods worth scraping: running, with an IP, not on their way out."""
    return [p for p in pods if p.ip and not p.deleting and p.phase == "Running"]
