"""kuberank under a real Prometheus Operator (built from Go modules, with the CRDs its module
ships), as a kube-prometheus-stack user runs it: the operator manages a Prometheus and an
Alertmanager that select objects by `release: kube-prometheus-stack`; the real Prometheus and
Alertmanager run from exactly the configuration it generates (localcluster.monitoringstack).

The chart's PodMonitor and PrometheusRule, rendered with the `monitoring.*` values such a user
sets, are accepted by the real CRDs and selected; rendered for another release they are not.
Prometheus loads the chart's rules, and scrapes the chart's operator pod (its Deployment run by
kwok, the real kuberank operator serving /metrics on that pod's IP) with the pod's labels.
The PodMonitor and PrometheusRule the kuberank operator renders for a RerankerDeployment are
accepted and picked up: Prometheus scrapes the inference and sidecar ports of the pod on its IP
with the pod's labels and loads the resource's rules; under load the queue alert fires, goes
through the operator-managed Alertmanager (routed by an AlertmanagerConfig) to kuberank's
webhook, and the resource scales.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster import LocalCluster
from localcluster.monitoringstack import MonitoringStack
from tests.e2e.autoscaling_support import Namespace, reranker, wait_for
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.pod_servers import INFERENCE_PORT, SIDECAR_PORT, Load, PodServers
from tests.e2e.prometheus_operator_support import (
    RELEASE,
    monitoring_stack,
    webhook_alertmanager_config,
)
from tests.e2e.rerankers import REPO, install_crd
from tests.e2e.subprocesses import http_json
from tests.e2e.test_autoscaling_alertmanager import AUTOSCALING

pytestmark = pytest.mark.prometheus

__all__ = ["monitoring_stack"]  # the fixture, used by name

CHART = REPO / "charts" / "kuberank"
NAME = "rr"
WAIT = 180.0


def _apply(cluster: LocalCluster, objects: list[dict[str, Any]], namespace: str) -> None:
    # server-side with strict field validation: a field the real CRD lacks is an error
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=e2e", "--validate=strict", "-n", namespace,
        "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )  # fmt: skip


def _chart_monitoring(cluster: LocalCluster, *, namespace: str, release_label: str) -> list[Any]:
    """The chart's PodMonitor and PrometheusRule as kube-prometheus-stack's user renders them."""
    rendered = cluster.helm(
        "template", "kuberank", str(CHART), "-n", namespace,
        "--set", "monitoring.podMonitor.enabled=true",
        "--set", f"monitoring.podMonitor.labels.release={release_label}",
        "--set", "monitoring.prometheusRule.enabled=true",
        "--set", f"monitoring.prometheusRule.labels.release={release_label}",
        "--show-only", "templates/podmonitor.yaml",
        "--show-only", "templates/prometheusrule.yaml",
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def pod_monitor_port(cluster: LocalCluster, namespace: str) -> str:
    """The containerPort of the chart's operator pod named by its PodMonitor (`http`)."""
    deployment = cluster.kubectl_json("get", "deployment", "kuberank", "-n", namespace)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return str(next(p["containerPort"] for p in container["ports"] if p["name"] == "http"))


def _scrape_jobs(stack: MonitoringStack) -> set[str]:
    return {job["job_name"] for job in stack.prometheus.generated_config()["scrape_configs"]}


def _rule_groups(stack: MonitoringStack) -> dict[str, list[str]]:
    groups = stack.prometheus.api("rules")["groups"]
    return {g["name"]: [r["name"] for r in g["rules"]] for g in groups}


def _shipped_rule_groups() -> set[str]:
    names: set[str] = set()
    for path in sorted((REPO / "deploy" / "prometheus").glob("*.yaml")):
        names |= {g["name"] for g in yaml.safe_load(path.read_text())["groups"]}
    return names


def _chart_operator_pod(cluster: LocalCluster, *, namespace: str) -> tuple[str, str]:
    """The chart's operator Deployment (and its ServiceAccount), run by kwok: (pod, pod IP)."""
    rendered = cluster.helm(
        "template", "kuberank", str(CHART), "-n", namespace,
        "--show-only", "templates/serviceaccount.yaml",
        "--show-only", "templates/deployment.yaml",
    ).stdout  # fmt: skip
    _apply(cluster, [doc for doc in yaml.safe_load_all(rendered) if doc], namespace)
    found: list[tuple[str, str]] = []

    def running() -> bool:
        pods = cluster.kubectl_json(
            "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=kuberank"
        )["items"]
        found[:] = [
            (p["metadata"]["name"], p["status"]["podIP"])
            for p in pods
            if p["status"].get("phase") == "Running" and p["status"].get("podIP")
        ]
        return len(found) == 1

    wait_for(running, timeout=WAIT, what="the chart's operator pod running on a kwok node")
    return found[0]


def test_chart_objects_are_accepted_and_selected_by_the_release_label(
    local_cluster: LocalCluster, monitoring_stack: MonitoringStack, tmp_path: Path
) -> None:
    stack = monitoring_stack
    suffix = secrets.token_hex(3)
    ours, theirs = f"kr-chart-{suffix}", f"kr-other-{suffix}"
    for namespace in (ours, theirs):
        local_cluster.kubectl("create", "namespace", namespace)
    try:
        selected = _chart_monitoring(local_cluster, namespace=ours, release_label=RELEASE)
        assert sorted(o["kind"] for o in selected) == ["PodMonitor", "PrometheusRule"]
        _apply(local_cluster, selected, ours)
        # the same objects for another Prometheus' release: accepted, never selected by ours
        other = _chart_monitoring(local_cluster, namespace=theirs, release_label="another")
        _apply(local_cluster, other, theirs)

        pod_monitor = next(o for o in selected if o["kind"] == "PodMonitor")
        job = f"podMonitor/{ours}/{pod_monitor['metadata']['name']}/0"
        wait_for(
            lambda: job in _scrape_jobs(stack),
            timeout=WAIT,
            what=f"the operator's generated scrape config to have {job}",
        )
        shipped = _shipped_rule_groups()
        wait_for(
            lambda: shipped <= set(_rule_groups(stack)),
            timeout=WAIT,
            what=f"Prometheus to load the chart's rule groups {sorted(shipped)}",
        )
        assert not any(j.startswith(f"podMonitor/{theirs}/") for j in _scrape_jobs(stack))
        # only the selected PrometheusRule is in the rule ConfigMaps Prometheus reads
        rule_files = list((stack.prometheus.root / "etc/prometheus/rules").rglob("*.yaml"))
        assert any(f.name.startswith(f"{ours}-") for f in rule_files)
        assert not any(f.name.startswith(f"{theirs}-") for f in rule_files)
        assert "KuberankQueueBacklog" in {
            rule for rules in _rule_groups(stack).values() for rule in rules
        }

        # The chart's operator pod (kwok runs it) and the real operator serving /metrics on
        # that pod's IP and port: the chart's PodMonitor scrapes it, with the pod's labels.
        install_crd(local_cluster)
        pod, ip = _chart_operator_pod(local_cluster, namespace=ours)
        port = int(pod_monitor_port(local_cluster, ours))
        operator = OperatorProcess(
            local_cluster,
            namespaces=[ours],
            log_path=tmp_path / "operator.log",
            extra_args=["--metrics-host", ip, "--metrics-port", str(port)],
        )
        try:
            url = f"http://{ip}:{port}/metrics"

            def target() -> dict[str, Any] | None:
                active = stack.prometheus.api("targets?state=active")["activeTargets"]
                return next(
                    (t for t in active if t["scrapePool"] == job and t["scrapeUrl"] == url), None
                )

            wait_for(
                lambda: (target() or {}).get("health") == "up",
                timeout=WAIT,
                what=f"Prometheus scraping the chart's operator pod at {url}",
            )
            labels = (target() or {})["labels"]
            assert (labels["namespace"], labels["pod"]) == (ours, pod)
            query = urllib.parse.quote(f'up{{namespace="{ours}",pod="{pod}"}}')
            series = stack.prometheus.api(f"query?query={query}")["result"]
            assert series, "the operator's series lack the pod's labels"
        except BaseException:
            print(operator.log_tail(40))
            raise
        finally:
            operator.stop()
    finally:
        for namespace in (ours, theirs):
            local_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_operator_objects_are_scraped_and_their_alert_scales_through_alertmanager(
    local_cluster: LocalCluster, monitoring_stack: MonitoringStack, tmp_path: Path
) -> None:
    stack = monitoring_stack
    install_crd(local_cluster)
    token = secrets.token_hex(16)
    with Namespace.create(local_cluster, "promop") as ns:
        local_cluster.kubectl(
            "create", "secret", "generic", "alert-token", "-n", ns.name,
            f"--from-literal=token={token}",
        )  # fmt: skip
        operator = OperatorProcess(
            local_cluster,
            namespaces=[ns.name],
            log_path=tmp_path / "operator.log",
            builtin=False,  # only the alert path scales
            webhook_secret="alert-token",
        )
        manifest = reranker(
            NAME,
            pool=ns.pool,
            autoscaling=AUTOSCALING,
            monitoring={
                "podMonitor": True,
                "prometheusRule": True,
                "alertWebhook": True,
                "labels": {"release": RELEASE},
            },
        )
        try:
            operator.wait_ready()
            _apply(
                local_cluster,
                [
                    webhook_alertmanager_config(
                        namespace=ns.name,
                        webhook_url=operator.webhook_url,
                        token_secret="alert-token",
                    )
                ],
                ns.name,
            )
            ns.apply(manifest)
            monitor, rule = f"{NAME}-kuberank", f"{NAME}-kuberank"
            objects = (f"podmonitor/{monitor}", f"prometheusrule/{rule}")
            wait_for(
                lambda: (
                    local_cluster.kubectl("get", *objects, "-n", ns.name, check=False).returncode
                    == 0
                ),
                timeout=WAIT,
                what="the operator's PodMonitor and PrometheusRule, accepted by the real CRDs",
            )
            with PodServers(
                local_cluster, namespace=ns.name, name=NAME, workdir=tmp_path / "pods"
            ) as servers:
                wait_for(lambda: len(servers.ready()) == 1, timeout=WAIT, what="pod 1 serving")
                (pod,) = servers.ready()
                pools = {f"podMonitor/{ns.name}/{monitor}/0", f"podMonitor/{ns.name}/{monitor}/1"}

                def targets() -> dict[str, dict[str, Any]]:
                    active = stack.prometheus.api("targets?state=active")["activeTargets"]
                    return {t["scrapeUrl"]: t for t in active if t["scrapePool"] in pools}

                urls = {
                    f"http://{pod.ip}:{port}/metrics" for port in (INFERENCE_PORT, SIDECAR_PORT)
                }
                wait_for(
                    lambda: (
                        set(targets()) == urls
                        and all(t["health"] == "up" for t in targets().values())
                    ),
                    timeout=WAIT,
                    what=f"Prometheus scraping {sorted(urls)} from the operator's PodMonitor",
                )
                for target in targets().values():
                    labels = target["labels"]
                    assert labels["namespace"] == ns.name
                    assert labels["pod"] == pod.pod
                    assert labels["rerankerdeployment"] == NAME
                    discovered = target["discoveredLabels"]
                    assert (
                        discovered["__meta_kubernetes_pod_label_kuberank_dev_rerankerdeployment"]
                        == NAME
                    )
                group = f"kuberank-{ns.name}-{NAME}"
                wait_for(
                    lambda: group in _rule_groups(stack),
                    timeout=WAIT,
                    what=f"Prometheus to load the operator's rule group {group}",
                )
                assert "KuberankQueueBacklog" in _rule_groups(stack)[group]

                with Load(servers):
                    wait_for(lambda: ns.replicas(NAME) == 2, timeout=WAIT, what="scale-up to 2")
                    # it came through the operator-managed Alertmanager, which holds the alert
                    # while the load lasts
                    status, alerts = http_json("GET", f"{stack.alertmanager.url}/api/v2/alerts")
                    assert status == 200
                    assert any(
                        a["labels"].get("alertname") == "KuberankQueueBacklog"
                        and a["labels"].get("namespace") == ns.name
                        for a in alerts
                    ), alerts
                last = ns.rrd(NAME)["status"]["lastScale"]
                assert (last["from"], last["to"]) == (1, 2)
                assert "alert KuberankQueueBacklog" in last["reason"]
                assert (
                    operator.metric(
                        'kuberank_operator_scale_decisions_total{direction="up",source="alert"}'
                    )
                    == 1
                )
                receivers = stack.alertmanager.generated_config()["receivers"]
                assert any("kuberank-operator" in r["name"] for r in receivers)
        except BaseException:
            print(operator.log_tail(80))
            print(stack.logs())
            raise
        finally:
            operator.stop()
