"""Reducing pods, nodes and owned objects to what the operator decides on."""

from __future__ import annotations

from typing import Any

from kuberank_operator.model import naming
from kuberank_operator.model.indexes import (
    GPU_PODS,
    child_entry,
    node_entry,
    pod_entries,
    rrd_entry,
)
from kuberank_operator.model.observations import summarize_child, summarize_pod


def pod_body(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "bge-7d9-x",
            "namespace": "search",
            "labels": {naming.LABEL_OWNER: "bge"},
        },
        "spec": {
            "nodeName": "gpu-0",
            "initContainers": [{"name": "init", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            "containers": [
                {"name": "inference", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                {"name": "gpu-sidecar", "resources": {"requests": {"cpu": "50m"}}},
            ],
        },
        "status": {"phase": "Running", **status},
    }


def waiting(why: str, **last: Any) -> dict[str, Any]:
    return {
        "name": "inference",
        "restartCount": 4,
        "state": {"waiting": {"reason": why, "message": "details"}},
        "lastState": {"terminated": last} if last else {},
    }


def test_pod_devices_owner_and_readiness() -> None:
    pod = summarize_pod(
        pod_body(conditions=[{"type": "Ready", "status": "True"}], podIP="127.1.0.5")
    )
    assert pod.owner == "bge"
    assert pod.gpu_requests == (("nvidia.com/gpu", 1),)
    assert pod.ready
    assert pod.holds_devices
    assert not pod.problems
    assert pod.ip == "127.1.0.5"


def test_crash_loop_oom_image_pull_and_config_errors() -> None:
    cases = {
        "CrashLoopBackOff": waiting("CrashLoopBackOff", reason="Error", exitCode=1),
        "OOMKilled": waiting(
            "CrashLoopBackOff", reason="OOMKilled", exitCode=137, finishedAt="2026-11-22T10:00:00Z"
        ),
        "ImagePullBackOff": waiting("ErrImagePull"),
        "ContainerConfigError": waiting("CreateContainerConfigError"),
    }
    for reason, status in cases.items():
        pod = summarize_pod(pod_body(containerStatuses=[status]))
        [problem] = pod.problems
        assert problem.reason == reason
        assert problem.container == "inference"
    oom = summarize_pod(pod_body(containerStatuses=[cases["OOMKilled"]])).problems[0]
    assert oom.at is not None
    assert oom.restarts == 4
    assert "exit 137" in oom.message


def test_running_after_an_old_oom_is_not_a_problem() -> None:
    status = {
        "name": "inference",
        "restartCount": 1,
        "state": {"running": {}},
        "lastState": {"terminated": {"reason": "OOMKilled"}},
    }
    assert summarize_pod(pod_body(containerStatuses=[status])).problems == ()


def test_unschedulable_message() -> None:
    pod = summarize_pod(
        {
            "metadata": {"name": "p", "namespace": "n", "labels": {naming.LABEL_OWNER: "x"}},
            "spec": {"containers": []},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ],
            },
        }
    )
    assert pod.unschedulable_message
    assert "Insufficient nvidia.com/gpu" in pod.unschedulable_message
    assert not pod.holds_devices


def test_index_entries() -> None:
    ours = pod_entries(pod_body())
    assert set(ours) == {("search", "bge"), GPU_PODS}
    foreign = pod_body()
    foreign["metadata"]["labels"] = {}
    assert set(pod_entries(foreign)) == {GPU_PODS}
    cpu_only = pod_body()
    cpu_only["spec"]["containers"] = [{"name": "c"}]
    cpu_only["spec"]["initContainers"] = []
    cpu_only["metadata"]["labels"] = {}
    assert pod_entries(cpu_only) == {}
    assert node_entry({"metadata": {"name": "cpu"}, "status": {"allocatable": {"cpu": "8"}}}) == {}
    rrd = rrd_entry(
        {
            "metadata": {"namespace": "a", "name": "b", "uid": "u", "generation": 2},
            "spec": {"replicas": 1},
        }
    )
    assert rrd[("a", "b")].owner.generation == 2


def owned(kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": "bge",
            "namespace": "search",
            "generation": 4,
            "annotations": {naming.ANNOTATION_APPLIED_HASH: "abc"},
            "ownerReferences": [
                {
                    "apiVersion": "kuberank.dev/v1alpha1",
                    "kind": "RerankerDeployment",
                    "name": "bge",
                    "uid": "u1",
                    "controller": True,
                }
            ],
        },
        **extra,
    }


def test_child_summaries() -> None:
    dep = summarize_child(
        owned(
            "Deployment",
            spec={"replicas": 3},
            status={
                "observedGeneration": 4,
                "replicas": 3,
                "readyReplicas": 2,
                "updatedReplicas": 3,
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                    },
                    {"type": "ReplicaFailure", "status": "True", "message": "quota exceeded"},
                ],
            },
        )
    )
    assert dep is not None
    assert (dep.spec_replicas, dep.ready_replicas, dep.applied_hash) == (3, 2, "abc")
    assert dep.progress_deadline_exceeded
    assert dep.replica_failure == "quota exceeded"
    svc = summarize_child(owned("Service"))
    assert svc is not None
    assert svc.kind == "Service"
    assert svc.owner_uid == "u1"
    stranger = owned("Service")
    stranger["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet"}]
    assert summarize_child(stranger) is None
    assert child_entry(stranger) == {}
