"""What each kopf in-memory index holds, and a typed read-only view over them.

kopf keeps one watch per kind and calls the index functions in main.py on every event; those
return the entries built here (pure). The controller reads the indexes through `World`, never
through the API, so a reconcile costs no request unless something must change.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from kuberank_operator.model import naming
from kuberank_operator.model.observations import (
    ChildSummary,
    NodeSummary,
    PodSummary,
    summarize_child,
    summarize_node,
    summarize_pod,
)

Key = tuple[str, str]  # (namespace, name) of a RerankerDeployment

# Index names: kopf passes each index to handlers as a keyword argument of this name.
RRD_INDEX = "rrd_index"
DEPLOYMENT_INDEX = "deployment_index"
SERVICE_INDEX = "service_index"
PDB_INDEX = "pdb_index"
POD_INDEX = "pod_index"
NODE_INDEX = "node_index"
ALL_INDEXES = (RRD_INDEX, DEPLOYMENT_INDEX, SERVICE_INDEX, PDB_INDEX, POD_INDEX, NODE_INDEX)

# Keys inside pod_index and node_index besides the per-owner ones.
GPU_PODS = "gpu-pods"
NODES = "nodes"


def rrd_entry(body: Mapping[str, Any]) -> dict[Key, dict[str, Any]]:
    """A copy of what the controller needs of a RerankerDeployment (kopf's body is a view)."""
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
    snapshot = {
        "metadata": {
            "namespace": key[0],
            "name": key[1],
            "uid": str(meta.get("uid", "")),
            "generation": int(meta.get("generation") or 0),
            "deleting": bool(meta.get("deletionTimestamp")),
        },
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }
    return {key: snapshot}


def child_entry(body: Mapping[str, Any]) -> dict[Key, ChildSummary]:
    summary = summarize_child(body)
    if summary is None:
        return {}
    return {(summary.namespace, summary.owner): summary}


def pod_entries(body: Mapping[str, Any]) -> dict[Key | str, PodSummary]:
    """Our pods by owner; every pod that holds a GPU under GPU_PODS (for capacity)."""
    pod = summarize_pod(body)
    entries: dict[Key | str, PodSummary] = {}
    if pod.owner:
        entries[(pod.namespace, pod.owner)] = pod
    if pod.gpu_requests and pod.holds_devices:
        entries[GPU_PODS] = pod
    return entries


def node_entry(body: Mapping[str, Any]) -> dict[str, NodeSummary]:
    node = summarize_node(body)
    # Nodes without GPUs can never host a RerankerDeployment pod.
    return {NODES: node} if node.allocatable else {}


def owner_of_child(body: Mapping[str, Any]) -> Key | None:
    summary = summarize_child(body)
    return None if summary is None else (summary.namespace, summary.owner)


def owner_of_pod(body: Mapping[str, Any]) -> Key | None:
    meta = body.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(naming.LABEL_OWNER)
    return (str(meta.get("namespace", "")), str(owner)) if owner else None


def _values(index: Mapping[Any, Iterable[Any]] | None, key: object) -> list[Any]:
    if index is None or key not in index:
        return []
    return list(index[key])


class World:
    """Read-only, typed access to the kopf indexes (live objects kopf keeps up to date)."""

    def __init__(self, indices: Mapping[str, Any]) -> None:
        self._indices = indices

    def _index(self, name: str) -> Mapping[Any, Iterable[Any]] | None:
        index = self._indices.get(name)
        return index if isinstance(index, Mapping) else None

    def rrd(self, key: Key) -> dict[str, Any] | None:
        values = _values(self._index(RRD_INDEX), key)
        return values[0] if values else None

    def rrd_keys(self) -> list[Key]:
        index = self._index(RRD_INDEX)
        return list(index) if index is not None else []

    def _child(self, index_name: str, key: Key) -> ChildSummary | None:
        values = _values(self._index(index_name), key)
        return values[0] if values else None

    def children(self, key: Key) -> dict[str, ChildSummary]:
        found = {}
        for index_name in (DEPLOYMENT_INDEX, SERVICE_INDEX, PDB_INDEX):
            child = self._child(index_name, key)
            if child is not None:
                found[child.kind] = child
        return found

    def pods(self, key: Key) -> list[PodSummary]:
        return sorted(_values(self._index(POD_INDEX), key), key=lambda p: p.name)

    def gpu_pods(self) -> list[PodSummary]:
        return _values(self._index(POD_INDEX), GPU_PODS)

    def nodes(self) -> list[NodeSummary]:
        return _values(self._index(NODE_INDEX), NODES)
