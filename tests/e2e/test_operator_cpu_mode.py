"""--accelerator=none under the real operator: a RerankerDeployment whose replicas outnumber the
GPUs of its nodes is Ready anyway, as its pods ask for none. The status and `kubectl get rrd` say
cpu; the pods carry no nvidia.com/ request, label selector or toleration, the inference server is
told --device cpu and the sidecar its fake backend."""

from __future__ import annotations

from collections.abc import Callable

from localcluster import LocalCluster
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.operator_support import (
    GpuPool,
    apply,
    condition,
    gpu_requests,
    minimal_spec,
    pods_of,
    ready_with,
    rrd_manifest,
    wait_for_state,
)


def _env(pod: dict[str, object], container: str) -> dict[str, str]:
    spec = pod["spec"]
    assert isinstance(spec, dict)
    [found] = [c for c in spec["containers"] if c["name"] == container]
    return {e["name"]: e.get("value", "") for e in found["env"]}


def test_cpu_pods_are_ready_beyond_the_gpus_and_say_so(
    local_cluster: LocalCluster,
    rrd_namespace: str,
    gpu_pools: Callable[..., GpuPool],
    operators: Callable[..., OperatorProcess],
) -> None:
    ns = rrd_namespace
    pool = gpu_pools(1, gpus=1)
    operators(ns, extra_args=("--accelerator", "none"))
    placement = pool.placement
    placement["tolerations"].append(
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    )
    placement["nodeSelector"]["nvidia.com/gpu.present"] = "true"
    apply(local_cluster, ns, rrd_manifest("cpu", minimal_spec(replicas=3, **placement)))

    body = wait_for_state(
        local_cluster, ns, "cpu", ready_with(3), what="3 CPU pods Ready on a 1-GPU node"
    )
    assert body["status"]["accelerator"] == "cpu"
    capacity = condition(body, "CapacityLimited")
    assert (capacity["status"], capacity["reason"]) == ("False", "NoAccelerator")

    table = local_cluster.kubectl("get", "rrd", "cpu", "-n", ns).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:3] == ["NAME", "MODEL", "ACCELERATOR"]
    assert row[header.index("ACCELERATOR")] == "cpu"

    pods = pods_of(local_cluster, ns, "cpu")
    assert len(pods) == 3
    for pod in pods:
        assert gpu_requests(pod) == {}
        selector = pod["spec"].get("nodeSelector") or {}
        assert not [k for k in selector if k.startswith("nvidia.com/")]
        keys = [t.get("key", "") for t in pod["spec"].get("tolerations") or []]
        assert not [k for k in keys if k.startswith("nvidia.com/")]
        assert _env(pod, "inference")["KUBERANK_DEVICE"] == "cpu"
        assert _env(pod, "gpu-sidecar")["KUBERANK_BACKEND"] == "fake"
