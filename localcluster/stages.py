"""kwok Stage objects: how fake nodes and pods move through their lifecycle. Pure.

The kwok binary (unlike kwokctl) has no built-in stages, so the harness passes these in its
config file. All transitions are immediate ("fast"), nodes keep leases (kwok renews them itself
with --node-lease-duration-seconds) and refresh their conditions rarely. Pods annotated
`kwok.x-k8s.io/status=custom` are left alone except for deletion, so a test can write their
status itself (a crash loop, an OOM kill).
"""

from __future__ import annotations

from typing import Any

CUSTOM_STATUS_ANNOTATION = "kwok.x-k8s.io/status"
CUSTOM_STATUS_VALUE = "custom"

_NOT_DELETED = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
_NOT_CUSTOM = {
    "key": f'.metadata.annotations["{CUSTOM_STATUS_ANNOTATION}"]',
    "operator": "NotIn",
    "values": [CUSTOM_STATUS_VALUE],
}
_READY_NOT_TRUE = {
    "key": '.status.conditions.[] | select( .type == "Ready" ) | .status',
    "operator": "NotIn",
    "values": ["True"],
}

# Go templates evaluated by kwok; NodeConditions/NodeIP/NodeName/PodIPsWith are kwok functions.
_NODE_CONDITIONS = """\
{{ $now := Now }}
{{ $since := or .metadata.creationTimestamp $now }}
conditions:
{{ range NodeConditions }}
- type: {{ .type | Quote }}
  status: {{ .status | Quote }}
  reason: {{ .reason | Quote }}
  message: {{ .message | Quote }}
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $since | Quote }}
{{ end }}
"""

_NODE_READY_STATUS = (
    _NODE_CONDITIONS
    + """\
{{ if not .status.addresses }}
addresses:
- type: InternalIP
  address: {{ NodeIP | Quote }}
- type: Hostname
  address: {{ NodeName | Quote }}
{{ end }}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
  containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
  kernelVersion: {{ printf "kwok-%s" Version | Quote }}
  osImage: kwok
  machineID: ""
  systemUUID: ""
  bootID: ""
phase: Running
"""
)

_POD_RUNNING_STATUS = """\
{{ $now := Now }}
phase: Running
startTime: {{ $now | Quote }}
conditions:
{{ range list "PodScheduled" "Initialized" "ContainersReady" "Ready" }}
- type: {{ . | Quote }}
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
{{ range .spec.readinessGates }}
- type: {{ .conditionType | Quote }}
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  restartCount: 0
  state:
    terminated:
      exitCode: 0
      reason: Completed
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
{{ with NodeIPWith .spec.nodeName }}
hostIP: {{ . | Quote }}
hostIPs:
- ip: {{ . | Quote }}
{{ end }}
{{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
"""

_POD_SUCCEEDED_STATUS = """\
{{ $now := Now }}
phase: Succeeded
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    terminated:
      exitCode: 0
      reason: Completed
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
"""


def _stage(
    name: str,
    *,
    kind: str,
    match: list[dict[str, Any]],
    next_: dict[str, Any],
    delay_ms: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "resourceRef": {"apiGroup": "v1", "kind": kind},
        "selector": {"matchExpressions": match},
        "next": next_,
    }
    if delay_ms is not None:
        # jitter spreads many nodes' heartbeats instead of updating them all at once
        spec["delay"] = {
            "durationMilliseconds": delay_ms,
            "jitterDurationMilliseconds": delay_ms + delay_ms // 10,
        }
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": spec,
    }


def render_stages(*, node_heartbeat_ms: int = 60_000) -> list[dict[str, Any]]:
    """Node initialise/heartbeat and pod ready/complete/delete stages for the kwok config."""
    if node_heartbeat_ms < 1_000:
        raise ValueError(
            f"node_heartbeat_ms={node_heartbeat_ms}: below 1000 ms the heartbeats flood the "
            "API server; use 1000 or more (node leases keep nodes Ready in between)"
        )
    node_running = {"key": ".status.phase", "operator": "In", "values": ["Running"]}
    ready_true = {**_READY_NOT_TRUE, "operator": "In", "values": ["True"]}
    pod_running = {"key": ".status.phase", "operator": "In", "values": ["Running"]}
    pod_pending = {"key": ".status.phase", "operator": "In", "values": ["Pending"]}
    owned_by_job = {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]}
    return [
        _stage(
            "node-initialize",
            kind="Node",
            match=[_READY_NOT_TRUE],
            next_={"statusTemplate": _NODE_READY_STATUS},
        ),
        _stage(
            "node-heartbeat",
            kind="Node",
            match=[node_running, ready_true],
            next_={"statusTemplate": _NODE_CONDITIONS},
            delay_ms=node_heartbeat_ms,
        ),
        _stage(
            "pod-ready",
            kind="Pod",
            match=[_NOT_DELETED, _NOT_CUSTOM, pod_pending, _READY_NOT_TRUE],
            next_={"statusTemplate": _POD_RUNNING_STATUS},
        ),
        _stage(
            "pod-complete",
            kind="Pod",
            match=[_NOT_DELETED, _NOT_CUSTOM, pod_running, owned_by_job],
            next_={"statusTemplate": _POD_SUCCEEDED_STATUS},
        ),
        # Custom-status pods are deleted too: without a kubelet nothing else would finish it.
        _stage(
            "pod-delete",
            kind="Pod",
            match=[{"key": ".metadata.deletionTimestamp", "operator": "Exists"}],
            next_={"delete": True},
        ),
    ]
