"""`kubectl scale rrd` drives the pod count through the scale subresource, and asking for more
GPUs than the matching nodes have sets CapacityLimited until capacity appears."""

from __future__ import annotations

from collections.abc import Callable

from localcluster import LocalCluster, wait_until
from localcluster.nodes import NODE_POOL_LABEL
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.operator_support import (
    POOL_TAINT,
    GpuPool,
    apply,
    condition,
    events_of,
    minimal_spec,
    pods_of,
    ready_with,
    rrd_manifest,
    wait_for_state,
)


def test_kubectl_scale_changes_the_pod_count(
    local_cluster: LocalCluster,
    rrd_namespace: str,
    gpu_pools: Callable[..., GpuPool],
    operators: Callable[..., OperatorProcess],
) -> None:
    ns = rrd_namespace
    pool = gpu_pools(1, gpus=4)
    operators(ns)
    apply(local_cluster, ns, rrd_manifest("ranker", minimal_spec(replicas=1, **pool.placement)))
    wait_for_state(local_cluster, ns, "ranker", ready_with(1), what="1 ready pod")

    local_cluster.kubectl("scale", "rrd", "ranker", "--replicas=3", "-n", ns)
    body = wait_for_state(local_cluster, ns, "ranker", ready_with(3), what="3 ready pods")
    assert len(pods_of(local_cluster, ns, "ranker")) == 3
    assert body["status"]["replicas"] == 3
    assert body["status"]["ready"] == "3/3"
    deployment = local_cluster.kubectl_json("get", "deployment", "ranker", "-n", ns)
    assert deployment["spec"]["replicas"] == 3

    local_cluster.kubectl("scale", "rrd", "ranker", "--replicas=1", "-n", ns)
    wait_until(
        lambda: len(pods_of(local_cluster, ns, "ranker")) == 1,
        timeout=90,
        what="the pod count to drop to 1",
    )
    wait_for_state(local_cluster, ns, "ranker", ready_with(1), what="1 ready pod again")
    scaled = [
        e["message"] for e in events_of(local_cluster, ns, "ranker") if e["reason"] == "Scaled"
    ]
    assert "scaled Deployment ranker from 1 to 3 pods" in scaled
    assert "scaled Deployment ranker from 3 to 1 pods" in scaled


def test_more_gpus_than_exist_sets_capacity_limited(
    local_cluster: LocalCluster,
    rrd_namespace: str,
    gpu_pools: Callable[..., GpuPool],
    operators: Callable[..., OperatorProcess],
) -> None:
    ns = rrd_namespace
    pool = gpu_pools(1, gpus=4)
    operators(ns)
    apply(local_cluster, ns, rrd_manifest("greedy", minimal_spec(replicas=6, **pool.placement)))
    body = wait_for_state(
        local_cluster,
        ns,
        "greedy",
        lambda b: (
            condition(b, "CapacityLimited").get("status") == "True"
            and (b.get("status") or {}).get("readyReplicas") == 4
        ),
        what="CapacityLimited with 4 of 6 pods ready",
    )
    limited = condition(body, "CapacityLimited")
    assert limited["reason"] == "InsufficientDevices"
    assert limited["message"] == "needs 6 nvidia.com/gpu, 4 free on 1 matching node"
    assert condition(body, "Ready")["status"] == "False"
    assert body["status"]["state"] == "CapacityLimited"
    assert body["status"]["capacity"] == {
        "resourceName": "nvidia.com/gpu", "needed": 6, "free": 4, "matchingNodes": 1,
    }  # fmt: skip
    pending = [p for p in pods_of(local_cluster, ns, "greedy") if not p["spec"].get("nodeName")]
    assert len(pending) == 2
    warnings = [e for e in events_of(local_cluster, ns, "greedy") if e["type"] == "Warning"]
    assert any(e["reason"] == "CapacityLimited" for e in warnings)

    # Two more GPUs join the pool: the operator notices the node and clears the condition.
    extra = local_cluster.add_gpu_nodes(
        1, prefix=f"{pool.name}-x", gpus=2, labels={NODE_POOL_LABEL: pool.name}
    )
    pool.nodes.extend(extra)
    local_cluster.kubectl("taint", "nodes", *extra, f"{POOL_TAINT}={pool.name}:NoSchedule")
    body = wait_for_state(
        local_cluster, ns, "greedy", ready_with(6), what="all 6 pods ready on the grown pool"
    )
    assert condition(body, "CapacityLimited")["status"] == "False"
    assert body["status"]["capacity"]["free"] == 6
