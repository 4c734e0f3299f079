"""What each kopf in-memory index holds, and a typed read-only view over them.

kopf keeps one watch per kind and calls the index functions in handlers.py on every event; those
return the entries built here (pure). The RerankerDeployment index holds each resource's parsed
view (model.resources), so the spec is parsed once per change. The loops read the indexes
through `World`, never through the API, so a reconcile costs no request unless something must
change. `Index` names each index once: handlers.py registers under it and `World` reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
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
from kuberank_operator.model.resources import Key, ResourceView, resource_view


class Index(StrEnum):
    """The kopf indexes: handlers.py registers each under this id, kopf passes it to handlers
    as a keyword argument of this name, and `World` looks it up by the same member."""

    RRD = "rrd_index"
    DEPLOYMENT = "deployment_index"
    SERVICE = "service_index"
    PDB = "pdb_index"
    POD = "pod_index"
    NODE = "node_index"


class MissingIndexError(RuntimeError):
    """kopf did not hand over an index the operator registered (a registration is missing)."""


def require_indexes(indices: Mapping[str, Any]) -> None:
    """Fail at start-up, not with an empty world, when an index was not registered."""
    missing = [index.value for index in Index if index.value not in indices]
    if missing:
        raise MissingIndexError(
            f"kopf indexes {', '.join(missing)} were not registered; register each "
            "model.indexes.Index member with @kopf.index(id=...) in handlers.py"
        )


# Keys inside pod_index and node_index besides the per-owner ones.
GPU_PODS = "gpu-pods"
NODES = "nodes"


def rrd_entry(body: Mapping[str, Any]) -> dict[Key, ResourceView]:
    """The RerankerDeployment parsed once, for every loop to read."""
    view = resource_view(body)
    return {view.key: view}


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

    def _index(self, index: Index) -> Mapping[Any, Iterable[Any]] | None:
        found = self._indices.get(index.value)
        return found if isinstance(found, Mapping) else None

    def rrd(self, key: Key) -> ResourceView | None:
        values = _values(self._index(Index.RRD), key)
        return values[0] if values else None

    def rrd_keys(self) -> list[Key]:
        index = self._index(Index.RRD)
        return list(index) if index is not None else []

    def _child(self, index: Index, key: Key) -> ChildSummary | None:
        values = _values(self._index(index), key)
        return values[0] if values else None

    def children(self, key: Key) -> dict[str, ChildSummary]:
        found = {}
        for index in (Index.DEPLOYMENT, Index.SERVICE, Index.PDB):
            child = self._child(index, key)
            if child is not None:
                found[child.kind] = child
        return found

    def pods(self, key: Key) -> list[PodSummary]:
        return sorted(_values(self._index(Index.POD), key), key=lambda p: p.name)

    def gpu_pods(self) -> list[PodSummary]:
        return _values(self._index(Index.POD), GPU_PODS)

    def nodes(self) -> list[NodeSummary]:
        return _values(self._index(Index.NODE), NODES)
