"""Status from real pod states: a crash-looping or OOM-killed pod keeps the resource from
Ready and sets Degraded with the reason; recovery clears it. kwok leaves pods annotated
kwok.x-k8s.io/status=custom alone, so the test writes their statuses as a kubelet would."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from localcluster import LocalCluster, wait_until
from localcluster.stages import CUSTOM_STATUS_ANNOTATION, CUSTOM_STATUS_VALUE
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.operator_support import (
    GpuPool,
    apply,
    condition,
    events_of,
    minimal_spec,
    pods_of,
    rrd_manifest,
    wait_for_state,
)

NOW = "2026-11-22T10:00:00Z"


def container(name: str, *, ready: bool, state: dict[str, Any], last: dict[str, Any] | None = None,
              restarts: int = 0) -> dict[str, Any]:  # fmt: skip
    return {
        "name": name,
        "image": "ghcr.io/kuberank/kuberank-inference:0.1.0",
        "imageID": "",
        "ready": ready,
        "started": ready,
        "restartCount": restarts,
        "state": state,
        "lastState": {"terminated": last} if last else {},
    }


def write_status(cluster: LocalCluster, ns: str, pod: str, *, inference: dict[str, Any]) -> None:
    ready = bool(inference["ready"])
    status = {
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.9",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": NOW},
                {"type": "Initialized", "status": "True", "lastTransitionTime": NOW},
                {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": NOW},
                {"type": "Ready", "status": str(ready), "lastTransitionTime": NOW},
            ],
            "containerStatuses": [
                inference,
                container("gpu-sidecar", ready=True, state={"running": {"startedAt": NOW}}),
            ],
        }
    }
    cluster.kubectl(
        "patch", "pod", pod, "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip


def healthy() -> dict[str, Any]:
    return container("inference", ready=True, state={"running": {"startedAt": NOW}})


def test_crash_loop_and_oom_degrade_and_recovery_clears(
    local_cluster: LocalCluster,
    rrd_namespace: str,
    gpu_pools: Callable[..., GpuPool],
    operators: Callable[..., OperatorProcess],
) -> None:
    ns = rrd_namespace
    pool = gpu_pools(1, gpus=2)
    operators(ns)
    spec = minimal_spec(
        replicas=2, podAnnotations={CUSTOM_STATUS_ANNOTATION: CUSTOM_STATUS_VALUE}, **pool.placement
    )
    apply(local_cluster, ns, rrd_manifest("flaky", spec))
    wait_until(
        lambda: (
            len([p for p in pods_of(local_cluster, ns, "flaky") if p["spec"].get("nodeName")]) == 2
        ),
        timeout=90,
        what="both pods scheduled",
    )
    good, bad = sorted(p["metadata"]["name"] for p in pods_of(local_cluster, ns, "flaky"))
    write_status(local_cluster, ns, good, inference=healthy())
    crash = container(
        "inference", ready=False, restarts=5,
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
        last={"exitCode": 1, "reason": "Error", "finishedAt": NOW},
    )  # fmt: skip
    write_status(local_cluster, ns, bad, inference=crash)
    body = wait_for_state(
        local_cluster,
        ns,
        "flaky",
        lambda b: condition(b, "Degraded").get("reason") == "CrashLoopBackOff",
        what="Degraded CrashLoopBackOff",
    )
    assert condition(body, "Degraded")["status"] == "True"
    assert bad in condition(body, "Degraded")["message"]
    assert condition(body, "Ready")["status"] == "False"
    assert body["status"]["state"] == "Degraded"

    oom = container(
        "inference", ready=False, restarts=6,
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        last={"exitCode": 137, "reason": "OOMKilled", "finishedAt": NOW},
    )  # fmt: skip
    write_status(local_cluster, ns, bad, inference=oom)
    body = wait_for_state(
        local_cluster,
        ns,
        "flaky",
        lambda b: condition(b, "Degraded").get("reason") == "OOMKilled",
        what="Degraded OOMKilled",
    )
    assert "OOMKilled" in condition(body, "Ready")["reason"]

    write_status(local_cluster, ns, bad, inference=healthy())
    body = wait_for_state(
        local_cluster,
        ns,
        "flaky",
        lambda b: condition(b, "Ready").get("status") == "True",
        what="Ready after recovery",
    )
    assert condition(body, "Degraded")["status"] == "False"
    reasons = [(e["type"], e["reason"]) for e in events_of(local_cluster, ns, "flaky")]
    assert ("Warning", "CrashLoopBackOff") in reasons
    assert ("Warning", "OOMKilled") in reasons
    assert ("Normal", "Recovered") in reasons
