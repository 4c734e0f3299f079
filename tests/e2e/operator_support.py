"""Fixtures and helpers for the operator's e2e tests: the CRD, a namespace per test, a private
pool of tainted fake GPU nodes per test, and the real `kuberank-operator` as a subprocess.

Each test gets its own namespace and its own nodes (tainted, so no other test's pods land on
them), and its operator watches only that namespace, so tests never act on each other.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster import LocalCluster, wait_until
from localcluster.nodes import NODE_POOL_LABEL
from tests.e2e.operator_process import WAIT, OperatorProcess
from tests.e2e.rerankers import CRD, OWNER_LABEL, install_crd

POOL_TAINT = "kuberank.dev/e2e-pool"


def rrd_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kuberank.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def minimal_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"id": "BAAI/bge-reranker-v2-m3", "source": {"hostPath": {"path": "/models/bge"}}}
    }
    spec.update(extra)
    return spec


@pytest.fixture(scope="session")
def rrd_crd(local_cluster: LocalCluster) -> Path:
    """The CRD applied with kubectl and Established."""
    install_crd(local_cluster)
    return CRD


@pytest.fixture
def rrd_namespace(local_cluster: LocalCluster, rrd_crd: Path) -> Iterator[str]:
    name = f"rrd-{secrets.token_hex(3)}"
    local_cluster.kubectl("create", "namespace", name)
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")


@dataclass
class GpuPool:
    """Fake GPU nodes only this test's pods can use (label to select, taint to keep others off)."""

    name: str
    nodes: list[str]

    @property
    def placement(self) -> dict[str, Any]:
        """Spec fields that put a RerankerDeployment on this pool."""
        return {
            "nodeSelector": {NODE_POOL_LABEL: self.name},
            "tolerations": [
                {"key": POOL_TAINT, "operator": "Equal", "value": self.name, "effect": "NoSchedule"}
            ],
        }


@pytest.fixture
def gpu_pools(local_cluster: LocalCluster) -> Iterator[Callable[..., GpuPool]]:
    made: list[GpuPool] = []

    def make(count: int, *, gpus: int = 8, mig_profile: str | None = None) -> GpuPool:
        name = f"rrd-{secrets.token_hex(3)}"
        nodes = local_cluster.add_gpu_nodes(count, prefix=name, gpus=gpus, mig_profile=mig_profile)
        pool = GpuPool(name=name, nodes=nodes)
        made.append(pool)
        local_cluster.kubectl("taint", "nodes", *nodes, f"{POOL_TAINT}={name}:NoSchedule")
        return pool

    yield make
    for pool in made:
        local_cluster.delete_nodes(pool.nodes)


@pytest.fixture
def operators(
    local_cluster: LocalCluster, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operators watching the given namespaces, alive (/healthz) before they are handed
    out; every one is stopped after the test."""
    started: list[OperatorProcess] = []

    def start(
        *namespaces: str, extra_args: tuple[str, ...] = (), admission_rules: str | None = None
    ) -> OperatorProcess:
        op = OperatorProcess(
            local_cluster,
            namespaces=namespaces,
            log_path=tmp_path / f"operator-{len(started)}.log",
            # This suite tests reconciling; the autoscaler and OOM restarts have their own.
            builtin=False,
            log_format="json",
            extra_args=("--resync-seconds", "30", *extra_args),
            admission_rules=admission_rules,
        )
        started.append(op)
        op.wait_healthy()
        return op

    yield start
    for op in started:
        op.stop()


def apply(cluster: LocalCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def get_rrd(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = cluster.kubectl_json("get", "rrd", name, "-n", namespace)
    return body


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def wait_for_state(
    cluster: LocalCluster,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    *,
    what: str,
    timeout: float = WAIT,
) -> dict[str, Any]:
    """Poll the RerankerDeployment until `check` holds; the timeout names its last status."""
    last: dict[str, Any] = {}

    def holds() -> bool:
        nonlocal last
        last = get_rrd(cluster, namespace, name)
        return check(last)

    try:
        wait_until(holds, timeout=timeout, what=what, interval=0.5)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last status: {json.dumps(last.get('status'))}") from None
    return last


def ready_with(replicas: int) -> Callable[[dict[str, Any]], bool]:
    def check(body: dict[str, Any]) -> bool:
        status = body.get("status") or {}
        return bool(
            condition(body, "Ready").get("status") == "True"
            and status.get("readyReplicas") == replicas
            and status.get("observedGeneration") == body["metadata"]["generation"]
        )

    return check


def pods_of(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"{OWNER_LABEL}={name}"
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def owned_objects(cluster: LocalCluster, namespace: str) -> dict[str, list[str]]:
    """Names of every Deployment, Service and PodDisruptionBudget in the namespace, by kind."""
    found: dict[str, list[str]] = {}
    for kind in ("deployments", "services", "poddisruptionbudgets", "replicasets"):
        items = cluster.kubectl_json("get", kind, "-n", namespace)["items"]
        found[kind] = sorted(i["metadata"]["name"] for i in items)
    return found


def events_of(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "events", "-n", namespace,
        "--field-selector", f"involvedObject.kind=RerankerDeployment,involvedObject.name={name}",
    )["items"]  # fmt: skip
    return items


def gpu_requests(pod: dict[str, Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for container in pod["spec"]["containers"]:
        for key, value in (container.get("resources", {}).get("limits") or {}).items():
            if key.startswith("nvidia.com/"):
                totals[key] = totals.get(key, 0) + int(value)
    return totals


__all__ = [
    "GpuPool",
    "apply",
    "condition",
    "events_of",
    "get_rrd",
    "gpu_pools",
    "gpu_requests",
    "minimal_spec",
    "operators",
    "owned_objects",
    "pods_of",
    "ready_with",
    "rrd_crd",
    "rrd_manifest",
    "rrd_namespace",
    "wait_for_state",
]
