"""The README's HPA (deploy/examples/hpa.yaml) for real: prometheus-adapter (built from Go
modules) serves the tokens waiting per pod (`kuberank_inference_queue_tokens`, from the
operator-managed Prometheus scraping the kuberank PodMonitor) on the custom metrics API, through
an APIService of the local API server, with the rules of deploy/examples/prometheus-adapter.yaml.
kube-controller-manager's HPA controller scales the RerankerDeployment's scale subresource up
under load and back down when idle; with `autoscaling.mode: external` the kuberank operator
(builtin evaluator on) leaves the replicas to it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster import LocalCluster
from localcluster.metricsadapter import PrometheusAdapter
from localcluster.monitoringstack import MonitoringStack
from tests.e2e.autoscaling_support import Namespace, reranker, wait_for
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.pod_servers import Load, PodServers
from tests.e2e.prometheus_operator_support import RELEASE, monitoring_stack
from tests.e2e.rerankers import REPO, install_crd

pytestmark = pytest.mark.prometheus

__all__ = ["monitoring_stack"]  # the fixture, used by name

HPA_EXAMPLE = REPO / "deploy" / "examples" / "hpa.yaml"
ADAPTER_RULES = REPO / "deploy" / "examples" / "prometheus-adapter.yaml"
METRIC = "kuberank_inference_queue_tokens"
NAME = "rr"
WAIT = 240.0


def hpa_for(name: str, *, max_replicas: int, scale_down_window_s: int) -> dict[str, Any]:
    """The README's HPA, pointed at NAME, with a small maximum and scale-down window so the test
    is quick; its metric and target are the example's."""
    hpa: dict[str, Any] = copy.deepcopy(yaml.safe_load(HPA_EXAMPLE.read_text()))
    hpa["metadata"]["name"] = name
    hpa["spec"]["scaleTargetRef"]["name"] = name
    hpa["spec"]["maxReplicas"] = max_replicas
    hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] = scale_down_window_s
    return hpa


def _current(ns: Namespace, name: str) -> list[dict[str, Any]]:
    hpa = ns.cluster.kubectl_json("get", "hpa", name, "-n", ns.name)
    metrics: list[dict[str, Any]] = (hpa.get("status") or {}).get("currentMetrics") or []
    return metrics


def test_hpa_scales_on_queue_tokens_through_prometheus_adapter(
    local_cluster: LocalCluster, monitoring_stack: MonitoringStack, tmp_path: Path
) -> None:
    install_crd(local_cluster)
    with Namespace.create(local_cluster, "hpa") as ns:
        operator = OperatorProcess(
            local_cluster, namespaces=[ns.name], log_path=tmp_path / "operator.log", builtin=True
        )
        manifest = reranker(
            NAME,
            pool=ns.pool,
            autoscaling={"mode": "external", "minReplicas": 1, "maxReplicas": 2,
                         "intervalSeconds": 5},
            monitoring={"podMonitor": True, "labels": {"release": RELEASE}},
        )  # fmt: skip
        adapter = None
        try:
            operator.wait_ready()
            ns.apply(manifest)
            adapter = PrometheusAdapter(
                local_cluster,
                config=ADAPTER_RULES,
                prometheus_url=monitoring_stack.prometheus.url,
                workdir=tmp_path / "adapter",
            )
            with PodServers(
                local_cluster, namespace=ns.name, name=NAME, workdir=tmp_path / "pods"
            ) as servers:
                wait_for(lambda: len(servers.ready()) == 1, timeout=WAIT, what="pod 1 serving")
                (pod,) = servers.ready()
                path = f"namespaces/{ns.name}/pods/*/{METRIC}"

                def served() -> dict[str, str]:
                    body = adapter.get(path) if adapter is not None else {}
                    assert isinstance(body, dict)
                    return {i["describedObject"]["name"]: i["value"] for i in body["items"]}

                wait_for(
                    lambda: served() == {pod.pod: "0"},
                    timeout=WAIT,
                    what=f"the custom metrics API to serve {METRIC} = 0 for the idle pod",
                )
                ns.apply(hpa_for(NAME, max_replicas=2, scale_down_window_s=5))
                wait_for(
                    lambda: bool(_current(ns, NAME)),
                    timeout=WAIT,
                    what="the HPA controller to read the metric",
                )
                assert ns.replicas(NAME) == 1

                with Load(servers):
                    wait_for(lambda: ns.replicas(NAME) == 2, timeout=WAIT, what="HPA scale-up")
                    (reading,) = _current(ns, NAME)
                    assert reading["pods"]["metric"]["name"] == METRIC
                wait_for(lambda: ns.replicas(NAME) == 1, timeout=WAIT, what="HPA scale-down")
                # the HPA scaled, not the operator: mode external leaves replicas alone
                assert "lastScale" not in (ns.rrd(NAME).get("status") or {})
                assert operator.metric("kuberank_operator_scale_decisions_total") == 0
                events = ns.cluster.kubectl_json(
                    "get", "events", "-n", ns.name, "--field-selector",
                    "involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale",
                )["items"]  # fmt: skip
                assert len(events) >= 2, events
        except BaseException:
            print(operator.log_tail(80))
            print(monitoring_stack.logs())
            if adapter is not None:
                print(adapter.log.read_text(errors="replace")[-6000:])
            raise
        finally:
            if adapter is not None:
                adapter.stop()
            operator.stop()
