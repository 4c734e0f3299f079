"""The shipped examples (crds/examples) reach Ready under the real operator: one pod per GPU on
fake H100 nodes, the MIG example on a MIG node, the embedding example with its volume and token
Secret. Each example only gets the test's node pool added to its placement."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from localcluster import LocalCluster
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.operator_support import (
    GpuPool,
    apply,
    events_of,
    gpu_requests,
    pods_of,
    ready_with,
    wait_for_state,
)
from tests.e2e.rerankers import EXAMPLES


def example(name: str, pool: GpuPool) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    placement = pool.placement
    spec = body["spec"]
    spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **placement["nodeSelector"]}
    spec["tolerations"] = [*spec.get("tolerations", []), *placement["tolerations"]]
    return body


def embedding_volume_and_secret(cluster: LocalCluster, namespace: str) -> None:
    """What embedding.yaml expects to exist: a bound ReadOnlyMany claim and the token Secret."""
    pv_name = f"{namespace}-embedding-models"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "hostPath": {"path": "/var/lib/kuberank/models"},
            "claimRef": {"namespace": namespace, "name": "embedding-models"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "embedding-models"},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(volume))
    apply(cluster, namespace, claim)
    cluster.kubectl(
        "create", "secret", "generic", "bge-m3-api", "-n", namespace,
        "--from-literal=token=e2e-not-a-secret",
    )  # fmt: skip


def test_examples_reach_ready_with_one_pod_per_device(
    local_cluster: LocalCluster,
    rrd_namespace: str,
    gpu_pools: Callable[..., GpuPool],
    operators: Callable[..., OperatorProcess],
) -> None:
    ns = rrd_namespace
    h100 = gpu_pools(2, gpus=2)
    mig = gpu_pools(1, gpus=1, mig_profile="1g.10gb")
    embedding_volume_and_secret(local_cluster, ns)
    operators(ns)
    wanted = {
        "bge-reranker": (example("gpu.yaml", h100), "nvidia.com/gpu", set(h100.nodes)),
        "minilm-reranker-mig": (example("mig.yaml", mig), "nvidia.com/mig-1g.10gb", set(mig.nodes)),
        "bge-m3-embed": (example("embedding.yaml", h100), "nvidia.com/gpu", set(h100.nodes)),
    }
    for body, _, _ in wanted.values():
        apply(local_cluster, ns, body)
    try:
        for name, (body, resource, nodes) in wanted.items():
            replicas = body["spec"]["replicas"]
            wait_for_state(
                local_cluster, ns, name, ready_with(replicas), what=f"{name} to be Ready"
            )
            pods = pods_of(local_cluster, ns, name)
            assert len(pods) == replicas
            for pod in pods:
                assert gpu_requests(pod) == {resource: 1}, pod["metadata"]["name"]
                assert pod["spec"]["nodeName"] in nodes
                assert pod["status"]["phase"] == "Running"
            reasons = {e["reason"] for e in events_of(local_cluster, ns, name)}
            assert {"Created", "Ready"} <= reasons, reasons
        # kubectl's printer columns: NAME MODEL GPU READY STATUS AGE.
        rows = local_cluster.kubectl("get", "rrd", "-n", ns, "--no-headers").stdout.splitlines()
        columns = {row.split()[0]: row.split() for row in rows}
        assert columns["bge-reranker"][1:5] == [
            "BAAI/bge-reranker-v2-m3", "nvidia.com/gpu", "2/2", "Ready",
        ]  # fmt: skip
        assert columns["minilm-reranker-mig"][2:5] == ["nvidia.com/mig-1g.10gb", "1/1", "Ready"]
        mig_pod = pods_of(local_cluster, ns, "minilm-reranker-mig")[0]
        assert mig_pod["spec"]["nodeName"] == mig.nodes[0]
    finally:
        local_cluster.kubectl("delete", "rrd", "--all", "-n", ns, "--wait=true", timeout=120)
        local_cluster.kubectl("delete", "pv", f"{ns}-embedding-models", "--wait=false")
