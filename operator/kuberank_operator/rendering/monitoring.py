"""The PodMonitor and PrometheusRule a RerankerDeployment's spec.monitoring asks for, and the
Prometheus HTTP service-discovery targets of the pods. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kuberank_operator.model import naming
from kuberank_operator.model.naming import Owner
from kuberank_operator.model.resources import Policies
from kuberank_operator.model.specs import RerankerSpec
from kuberank_operator.rendering.alertrules import (
    CR_LABEL,
    DEFAULT_RUNBOOK_BASE_URL,
    INFERENCE_PORT_NAME,
    NAMESPACE_LABEL,
    POD_LABEL,
    PROMETHEUS_RULE_API,
    SIDECAR_PORT_NAME,
    duration,
    owner_references,
    render_prometheus_rule,
    thresholds_from_policies,
)

# The monitoring kinds, as rendered per RerankerDeployment.
KINDS = ("PodMonitor", "PrometheusRule")


def render_pod_monitor(
    *,
    owner: Mapping[str, Any],
    pod_selector: Mapping[str, str],
    cr_pod_label: str,
    labels: Mapping[str, str],
    interval_s: float,
    port_names: Sequence[str] = (INFERENCE_PORT_NAME, SIDECAR_PORT_NAME),
) -> dict[str, Any]:
    """The PodMonitor scraping the inference and sidecar ports of one RerankerDeployment's pods.

    `cr_pod_label` is the pod label holding the RerankerDeployment's name; it becomes the
    `rerankerdeployment` label the rules group by. Prometheus Operator adds namespace and pod.
    """
    name = owner["metadata"]["name"]
    meta_label = "__meta_kubernetes_pod_label_" + "".join(
        c if c.isalnum() else "_" for c in cr_pod_label
    )
    endpoints = [
        {
            "port": port,
            "path": "/metrics",
            "interval": duration(interval_s),
            "relabelings": [
                {"sourceLabels": [meta_label], "targetLabel": CR_LABEL, "action": "replace"}
            ],
        }
        for port in port_names
    ]
    return {
        "apiVersion": PROMETHEUS_RULE_API,
        "kind": "PodMonitor",
        "metadata": {
            "name": f"{name}-kuberank",
            "namespace": owner["metadata"]["namespace"],
            "labels": dict(labels),
            "ownerReferences": owner_references(owner),
        },
        "spec": {
            "selector": {"matchLabels": dict(pod_selector)},
            "podMetricsEndpoints": endpoints,
        },
    }


def http_sd_groups(
    pods: Mapping[tuple[str, str], Sequence[tuple[str, str]]],
    *,
    ports: Sequence[int],
) -> list[dict[str, Any]]:
    """Prometheus HTTP service discovery target groups: per pod its metrics ports, labelled as
    the rules group (namespace, pod, rerankerdeployment). `pods` maps (namespace, name) to
    (pod name, pod IP) pairs."""
    groups: list[dict[str, Any]] = []
    for (namespace, name), members in sorted(pods.items()):
        for pod, ip in sorted(members):
            host = f"[{ip}]" if ":" in ip else ip
            groups.append(
                {
                    "targets": [f"{host}:{port}" for port in ports],
                    "labels": {NAMESPACE_LABEL: namespace, CR_LABEL: name, POD_LABEL: pod},
                }
            )
    return groups


def desired_objects(
    *,
    owner: Owner,
    spec: RerankerSpec,
    policies: Policies,
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
) -> dict[str, dict[str, Any] | None]:
    """Per kind, the object spec.monitoring asks for, or None where it asks for none."""
    body = {
        "apiVersion": naming.API_VERSION,
        "kind": naming.KIND,
        "metadata": {"name": owner.name, "namespace": owner.namespace, "uid": owner.uid},
    }
    labels = {**naming.common_labels(owner.name), **spec.monitoring.labels}
    interval = float(spec.autoscaling.interval_seconds)
    pod_monitor = None
    if spec.monitoring.pod_monitor:
        pod_monitor = render_pod_monitor(
            owner=body,
            pod_selector=naming.selector_labels(owner.name),
            cr_pod_label=naming.LABEL_OWNER,
            labels=labels,
            interval_s=interval,
        )
        if not spec.sidecar.enabled:
            pod_monitor["spec"]["podMetricsEndpoints"] = pod_monitor["spec"]["podMetricsEndpoints"][
                :1
            ]
    rule = None
    if spec.monitoring.prometheus_rule:
        rule = render_prometheus_rule(
            owner=body,
            thresholds=thresholds_from_policies(
                scale=policies.scale, oom=policies.oom, interval_s=interval
            ),
            labels=labels,
            runbook_base_url=runbook_base_url,
        )
    return {"PodMonitor": pod_monitor, "PrometheusRule": rule}
