"""Count the GPUs or MIG slices a RerankerDeployment can get, before the scheduler says no.

Pure. A node counts when it is Ready, schedulable, matches the pod's nodeSelector and required
node affinity, and every NoSchedule/NoExecute taint on it is tolerated. On each such node the
free devices are allocatable minus what bound, unfinished pods of others hold; the resource's
own pods are not subtracted, since their devices are the ones it needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kuberank_operator.model.observations import NodeSummary, PodSummary
from kuberank_operator.model.specs import CPU_ONLY

BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


@dataclass(frozen=True)
class Capacity:
    resource_name: str
    needed: int
    free: int
    matching_nodes: int

    @property
    def limited(self) -> bool:
        return self.needed > self.free

    @property
    def message(self) -> str:
        nodes = "node" if self.matching_nodes == 1 else "nodes"
        return (
            f"needs {self.needed} {self.resource_name}, {self.free} free on "
            f"{self.matching_nodes} matching {nodes}"
        )


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: tuple[str, str, str]) -> bool:
    key, value, effect = taint
    for tol in tolerations:
        tol_effect = tol.get("effect") or ""
        if tol_effect and tol_effect != effect:
            continue
        operator = tol.get("operator") or "Equal"
        tol_key = tol.get("key") or ""
        if operator == "Exists" and (not tol_key or tol_key == key):
            return True
        if operator == "Equal" and tol_key == key and (tol.get("value") or "") == value:
            return True
    return False


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = str(expr.get("key", ""))
    op = expr.get("operator")
    values = [str(v) for v in expr.get("values") or []]
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _term_matches(term: Mapping[str, Any], node: NodeSummary) -> bool:
    labels = node.label_map
    fields = {"metadata.name": node.name}
    return all(_expression_matches(e, labels) for e in term.get("matchExpressions") or []) and all(
        _expression_matches(e, fields) for e in term.get("matchFields") or []
    )


def node_matches(
    node: NodeSummary,
    *,
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
    affinity: Mapping[str, Any],
) -> bool:
    """Would the scheduler consider this node for the pod (ignoring CPU, memory, spread)?"""
    if not node.ready or node.unschedulable:
        return False
    labels = node.label_map
    if any(labels.get(k) != v for k, v in node_selector.items()):
        return False
    if any(
        effect in BLOCKING_EFFECTS and not tolerates(tolerations, (key, value, effect))
        for key, value, effect in node.taints
    ):
        return False
    required = (affinity.get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    # Terms are ORed; an empty list places no constraint.
    return not terms or any(_term_matches(t, node) for t in terms)


def count_capacity(
    *,
    resource_name: str,
    needed: int,
    owner: tuple[str, str],
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
    affinity: Mapping[str, Any],
    nodes: Iterable[NodeSummary],
    pods: Iterable[PodSummary],
) -> Capacity:
    """Devices free for `owner` (namespace, name) on the nodes its pods may land on."""
    namespace, name = owner
    held: dict[str, int] = {}
    for pod in pods:
        if not pod.holds_devices or (pod.namespace == namespace and pod.owner == name):
            continue
        held[pod.node_name] = held.get(pod.node_name, 0) + pod.devices(resource_name)
    free = 0
    matching = 0
    for node in nodes:
        allocatable = node.allocatable_of(resource_name)
        if allocatable <= 0 or not node_matches(
            node, node_selector=node_selector, tolerations=tolerations, affinity=affinity
        ):
            continue
        matching += 1
        free += max(0, allocatable - held.get(node.name, 0))
    return Capacity(resource_name=resource_name, needed=needed, free=free, matching_nodes=matching)


def cpu_capacity() -> Capacity:
    """Under --accelerator=none pods request no device: nothing to count, never limited."""
    return Capacity(resource_name=CPU_ONLY, needed=0, free=0, matching_nodes=0)
