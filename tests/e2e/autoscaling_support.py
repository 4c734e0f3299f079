"""The autoscaling e2e tests' resources: a namespace with its own GPU node pool, a
RerankerDeployment on it, and the rules its PrometheusRule would load. The processes they run
against are in operator_process.py (the operator), pod_servers.py (inference servers and GPU
sidecars on the pods' IPs, load) and monitoring.py (Prometheus and Alertmanager).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.model.policies import oom_policy, scale_policy
from kuberank_operator.rendering.alertrules import render_prometheus_rule, thresholds_from_policies
from localcluster import LocalCluster, wait_until
from localcluster.nodes import NODE_POOL_LABEL
from tests.e2e.rerankers import OWNER_LABEL


@dataclass
class Namespace:
    """A namespace with its own GPU node pool, removed afterwards."""

    cluster: LocalCluster
    name: str
    pool: str
    nodes: list[str] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def create(cls, cluster: LocalCluster, prefix: str) -> Iterator[Namespace]:
        suffix = secrets.token_hex(3)
        ns = cls(cluster=cluster, name=f"{prefix}-{suffix}", pool=f"{prefix}-{suffix}")
        cluster.kubectl("create", "namespace", ns.name)
        ns.nodes = cluster.add_gpu_nodes(1, prefix=ns.pool, gpus=4)
        try:
            yield ns
        finally:
            cluster.kubectl("delete", "namespace", ns.name, "--wait=false", check=False)
            cluster.delete_nodes(ns.nodes)

    def apply(self, manifest: Mapping[str, Any]) -> None:
        self.cluster.kubectl("apply", "-n", self.name, "-f", "-", input=json.dumps(manifest))

    def rrd(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.cluster.kubectl_json("get", "rrd", name, "-n", self.name)
        return body

    def replicas(self, name: str) -> int:
        return int(self.rrd(name)["spec"]["replicas"])

    def events(self, reason: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.kubectl_json(
            "get", "events", "-n", self.name, "--field-selector", f"reason={reason}"
        )["items"]
        return items

    def pods(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.kubectl_json(
            "get", "pods", "-n", self.name, "-l", f"{OWNER_LABEL}={name}"
        )["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def reranker(
    name: str,
    *,
    pool: str,
    autoscaling: Mapping[str, Any],
    oom: Mapping[str, Any] | None = None,
    monitoring: Mapping[str, Any] | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    """A RerankerDeployment on the namespace's own node pool."""
    spec: dict[str, Any] = {
        "model": {
            "id": "sentence-transformers/all-MiniLM-L6-v2",
            "task": "embed",
            "maxLength": 256,
            "source": {"hostPath": {"path": "/var/lib/kuberank/models/minilm"}},
        },
        "replicas": replicas,
        "gpu": {"resourceName": "nvidia.com/gpu"},
        "batching": {"maxBatchTokens": 4096},
        "nodeSelector": {NODE_POOL_LABEL: pool},
        "autoscaling": dict(autoscaling),
    }
    if oom is not None:
        spec["oom"] = dict(oom)
    if monitoring is not None:
        spec["monitoring"] = dict(monitoring)
    return {
        "apiVersion": "kuberank.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def operator_rules_yaml(manifest: Mapping[str, Any], namespace: str) -> str:
    """The rule groups of the PrometheusRule the operator renders for this resource, as a
    rules file Prometheus loads (tests and benchmarks run without the Prometheus Operator)."""
    spec = parse_spec(manifest["spec"])
    owner = {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "metadata": {"name": manifest["metadata"]["name"], "namespace": namespace, "uid": "-"},
    }
    rule = render_prometheus_rule(
        owner=owner,
        thresholds=thresholds_from_policies(
            scale=scale_policy(spec.autoscaling),
            oom=oom_policy(spec.oom),
            interval_s=spec.autoscaling.interval_seconds,
        ),
        labels={},
    )
    return yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False)


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    wait_until(condition, timeout=timeout, what=what, interval=1.0)
