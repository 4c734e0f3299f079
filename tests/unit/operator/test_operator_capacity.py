"""Counting free GPUs and MIG slices on the nodes a RerankerDeployment may use."""

from __future__ import annotations

from typing import Any

from kuberank_operator.model.observations import (
    NodeSummary,
    PodSummary,
    summarize_node,
    summarize_pod,
)
from kuberank_operator.reconcile.capacity import count_capacity, node_matches, tolerates

GPU = "nvidia.com/gpu"
MIG = "nvidia.com/mig-1g.10gb"


def node(
    name: str,
    *,
    gpus: int = 8,
    resource: str = GPU,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: bool = True,
    unschedulable: bool = False,
) -> NodeSummary:
    return summarize_node(
        {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {
                "allocatable": {"cpu": "64", resource: str(gpus)},
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
    )


def pod(
    name: str,
    *,
    node_name: str,
    n: int = 1,
    resource: str = GPU,
    owner: str | None = None,
    namespace: str = "ns",
    phase: str = "Running",
) -> PodSummary:
    labels = {"kuberank.dev/rerankerdeployment": owner} if owner else {}
    return summarize_pod(
        {
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "nodeName": node_name,
                "containers": [{"name": "c", "resources": {"limits": {resource: str(n)}}}],
            },
            "status": {"phase": phase},
        }
    )


def count(nodes: list[NodeSummary], pods: list[PodSummary], **kw: Any) -> Any:
    args: dict[str, Any] = {
        "resource_name": GPU,
        "needed": 6,
        "owner": ("ns", "mine"),
        "node_selector": {},
        "tolerations": [],
        "affinity": {},
    }
    args.update(kw)
    return count_capacity(nodes=nodes, pods=pods, **args)


def test_others_pods_are_subtracted_ours_are_not() -> None:
    nodes = [node("a", gpus=4), node("b", gpus=4)]
    pods = [
        pod("theirs-1", node_name="a", n=2),
        pod("theirs-2", node_name="b", n=2, namespace="other"),
        pod("ours-1", node_name="a", owner="mine"),
        pod("same-name-other-ns", node_name="b", owner="mine", namespace="elsewhere"),
        pod("done", node_name="b", phase="Succeeded", n=4),
        pod("pending", node_name="", n=4),
    ]
    cap = count(nodes, pods)
    assert (cap.free, cap.matching_nodes) == (3, 2)
    assert cap.limited
    assert cap.message == "needs 6 nvidia.com/gpu, 3 free on 2 matching nodes"


def test_free_never_goes_negative_on_an_overcommitted_node() -> None:
    cap = count([node("a", gpus=2)], [pod("big", node_name="a", n=5)], needed=1)
    assert cap.free == 0
    assert cap.limited


def test_only_the_requested_resource_counts() -> None:
    nodes = [node("h100", gpus=8), node("a100", gpus=7, resource=MIG)]
    gpus = count(nodes, [], needed=2)
    slices = count(
        nodes, [pod("x", node_name="a100", resource=MIG, n=3)], resource_name=MIG, needed=5
    )
    assert (gpus.free, gpus.matching_nodes) == (8, 1)
    assert (slices.free, slices.matching_nodes, slices.limited) == (4, 1, True)


def test_node_selector_taints_readiness_and_cordons() -> None:
    nodes = [
        node("pool-a", labels={"pool": "a"}),
        node("pool-b", labels={"pool": "b"}),
        node(
            "tainted",
            labels={"pool": "a"},
            taints=[{"key": "gpu", "value": "x", "effect": "NoSchedule"}],
        ),
        node("notready", labels={"pool": "a"}, ready=False),
        node("cordoned", labels={"pool": "a"}, unschedulable=True),
    ]
    assert count(nodes, [], node_selector={"pool": "a"}).matching_nodes == 1
    tolerated = count(
        nodes,
        [],
        node_selector={"pool": "a"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    assert tolerated.matching_nodes == 2


def test_prefer_no_schedule_taints_do_not_block() -> None:
    soft = node("soft", taints=[{"key": "k", "value": "v", "effect": "PreferNoSchedule"}])
    assert node_matches(soft, node_selector={}, tolerations=[], affinity={})


def test_toleration_matching() -> None:
    taint = ("nvidia.com/gpu", "present", "NoSchedule")
    assert tolerates([{"operator": "Exists"}], taint)
    assert tolerates([{"key": "nvidia.com/gpu", "operator": "Exists"}], taint)
    assert tolerates([{"key": "nvidia.com/gpu", "value": "present"}], taint)
    assert not tolerates([{"key": "nvidia.com/gpu", "value": "absent"}], taint)
    assert not tolerates(
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}], taint
    )
    assert not tolerates([], taint)


def test_required_node_affinity() -> None:
    nodes = [
        node("h100", labels={"product": "H100", "gen": "9"}),
        node("a100", labels={"product": "A100", "gen": "8"}),
    ]

    def matching(*expressions: dict[str, Any]) -> int:
        affinity = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]
                }
            }
        }
        return int(count(nodes, [], affinity=affinity).matching_nodes)

    assert matching({"key": "product", "operator": "In", "values": ["H100"]}) == 1
    assert matching({"key": "product", "operator": "NotIn", "values": ["H100"]}) == 1
    assert matching({"key": "product", "operator": "Exists"}) == 2
    assert matching({"key": "missing", "operator": "DoesNotExist"}) == 2
    assert matching({"key": "gen", "operator": "Gt", "values": ["8"]}) == 1
    assert matching({"key": "gen", "operator": "Lt", "values": ["9"]}) == 1
    by_name = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": ["a100"]}
                        ]
                    },
                    {
                        "matchExpressions": [
                            {"key": "product", "operator": "In", "values": ["B200"]}
                        ]
                    },
                ]
            }
        }
    }
    assert count(nodes, [], affinity=by_name).matching_nodes == 1
