"""kopf registrations, and nothing else: each handler hands off in one or two lines.

Every handler is `async def`: kopf runs plain functions in a thread pool, and these touch the
controller's work queue, which lives on the event loop.

Indexes keep small summaries of RerankerDeployments, their Deployments, Services,
PodDisruptionBudgets and pods, every pod holding a GPU, and GPU nodes. Event handlers only put
keys into the controller's work queue; the controller (reconcile/controller.py) does the work. No
handler here uses kopf's change-tracking (create/update/delete/timers), so kopf writes no
annotations and no finalizers on RerankerDeployments: deletion is plain garbage collection.
"""

from __future__ import annotations

from typing import Any

import kopf

from kuberank_operator import running
from kuberank_operator.model import indexes, naming
from kuberank_operator.model.indexes import Index
from kuberank_operator.model.observations import summarize_node

registry = kopf.OperatorRegistry()
RRD = (naming.GROUP, naming.VERSION, naming.PLURAL)


def _runtime(memo: Any) -> running.Runtime:
    runtime: running.Runtime = memo.runtime
    return runtime


def _controller(memo: Any) -> Any:
    return _runtime(memo).controller


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> Any:
    # An explicit registry has no fallback login: use the kubernetes client's, as kubeapi does.
    return kopf.login_via_client(**kwargs)


@kopf.on.startup(registry=registry)
async def startup(memo: Any, settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    await running.start(runtime=_runtime(memo), settings=settings, indices=kwargs)


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: Any, **_: Any) -> None:
    await running.stop(runtime=_runtime(memo))


@kopf.index(*RRD, id=Index.RRD.value, registry=registry)
async def rrd_index(body: kopf.Body, **_: Any) -> Any:
    return indexes.rrd_entry(body)


@kopf.index("apps", "v1", "deployments", id=Index.DEPLOYMENT.value, registry=registry)
async def deployment_index(body: kopf.Body, **_: Any) -> Any:
    return indexes.child_entry(body)


@kopf.index("v1", "services", id=Index.SERVICE.value, registry=registry)
async def service_index(body: kopf.Body, **_: Any) -> Any:
    return indexes.child_entry(body)


@kopf.index("policy", "v1", "poddisruptionbudgets", id=Index.PDB.value, registry=registry)
async def pdb_index(body: kopf.Body, **_: Any) -> Any:
    return indexes.child_entry(body)


@kopf.index("v1", "pods", id=Index.POD.value, registry=registry)
async def pod_index(body: kopf.Body, **_: Any) -> Any:
    return indexes.pod_entries(body)


@kopf.index("v1", "nodes", id=Index.NODE.value, registry=registry)
async def node_index(body: kopf.Body, **_: Any) -> Any:
    return indexes.node_entry(body)


@kopf.on.event(*RRD, registry=registry)
async def rrd_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    key = (body.metadata.namespace or "", body.metadata.name or "")
    if event.get("type") == "DELETED":
        _controller(memo).forget(key)
    else:
        _controller(memo).enqueue(key)


@kopf.on.event("apps", "v1", "deployments", registry=registry)
@kopf.on.event("v1", "services", registry=registry)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", registry=registry)
async def child_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    owner = indexes.owner_of_child(body)
    if owner is not None:
        _controller(memo).enqueue(owner)


@kopf.on.event("v1", "pods", registry=registry)
async def pod_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    owner = indexes.owner_of_pod(body)
    if owner is not None:
        _controller(memo).enqueue(owner)
    if indexes.pod_entries(body).get(indexes.GPU_PODS) is not None or owner is not None:
        _controller(memo).capacity_changed()


@kopf.on.event("v1", "nodes", registry=registry)
async def node_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    if summarize_node(body).allocatable:
        _controller(memo).capacity_changed()
