"""The PodMonitor and PrometheusRule a RerankerDeployment's spec.monitoring asks for. Pure."""

from __future__ import annotations

from typing import Any

from kuberank_operator.model import naming
from kuberank_operator.model.naming import Owner
from kuberank_operator.model.resources import Policies
from kuberank_operator.model.specs import RerankerSpec
from kuberank_operator.rendering.alertrules import (
    DEFAULT_RUNBOOK_BASE_URL,
    render_pod_monitor,
    render_prometheus_rule,
    thresholds_from_policies,
)

# The monitoring kinds, as rendered per RerankerDeployment.
KINDS = ("PodMonitor", "PrometheusRule")


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
