"""Prometheus alerting rules and a PodMonitor rendered from a RerankerDeployment's thresholds.

The same renderer makes three things: a PrometheusRule per RerankerDeployment (its own
thresholds, its own series), a PodMonitor that scrapes its pods' two ports with the labels the
rules group by, and the plain rules file shipped in deploy/prometheus/ (defaults, all series).

Every alert carries `kuberank_action` (scale-up, scale-down, restart-pod or none), which the
operator's Alertmanager webhook maps to an action, and a `runbook_url` annotation.
Pure functions: objects in, objects out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from kuberank_operator.model import naming
from kuberank_operator.model.policies import (
    CRITICAL_XIDS,
    OomPolicy,
    ScalePolicy,
    oom_policy,
    scale_policy,
)
from kuberank_operator.model.signals import (
    CUDA_OOM_TOTAL,
    GPU_UTIL,
    GR_ENGINE_ACTIVE,
    QUEUE_DEPTH,
    QUEUE_TOKENS,
    READY,
    REQUEST_DURATION_BUCKET,
    XID_ERRORS,
)
from kuberank_operator.model.specs import AutoscalingSpec, OomSpec

Action = Literal["scale-up", "scale-down", "restart-pod", "none"]

# Labels every kuberank series carries once scraped through the PodMonitor (or the equivalent
# kubernetes_sd relabeling in docs/operator/prometheus.md); the rules group by them.
CR_LABEL = "rerankerdeployment"
NAMESPACE_LABEL = "namespace"
POD_LABEL = "pod"
ACTION_LABEL = "kuberank_action"
GROUP_BY = f"{NAMESPACE_LABEL}, {CR_LABEL}"

DEFAULT_RUNBOOK_BASE_URL = "https://github.com/kuberank/kuberank/blob/main/docs/runbooks"
PROMETHEUS_RULE_API = "monitoring.coreos.com/v1"
INFERENCE_PORT_NAME = naming.INFERENCE_PORT_NAME
SIDECAR_PORT_NAME = naming.SIDECAR_PORT_NAME


@dataclass(frozen=True)
class AlertThresholds:
    """The thresholds the rules compare against; the same ones the builtin evaluator uses."""

    queue_depth: float
    p99_latency_ms: float
    gpu_utilization: float
    up_for_s: float
    down_gpu_utilization: float
    down_for_s: float
    oom_max_events: int
    oom_window_s: float
    stuck_s: float
    # Range of rate() over the latency histogram: four scrape intervals.
    rate_window_s: float
    queue_tokens: float = 0.0  # 0: no KuberankQueueTokensBacklog rule


def thresholds_from_policies(
    *, scale: ScalePolicy, oom: OomPolicy, interval_s: float
) -> AlertThresholds:
    """The alert thresholds of one RerankerDeployment."""
    return AlertThresholds(
        queue_depth=scale.up_queue_depth,
        p99_latency_ms=scale.up_p99_latency_ms,
        gpu_utilization=scale.up_gpu_utilization,
        up_for_s=scale.up_for_s,
        down_gpu_utilization=scale.down_gpu_utilization,
        down_for_s=scale.down_for_s,
        oom_max_events=oom.max_events,
        oom_window_s=oom.window_s,
        stuck_s=oom.stuck_s,
        rate_window_s=max(4 * interval_s, 4.0),
        queue_tokens=scale.up_queue_tokens,
    )


# The rules shipped in deploy/prometheus/: the spec's own defaults (model.specs), nothing more.
DEFAULT_THRESHOLDS = thresholds_from_policies(
    scale=scale_policy(AutoscalingSpec()),
    oom=oom_policy(OomSpec()),
    interval_s=AutoscalingSpec().interval_seconds,
)


def duration(seconds: float) -> str:
    """A Prometheus duration in the largest whole unit: 600 -> "10m", 90 -> "90s"."""
    whole = max(0, round(seconds))
    for unit, size in (("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _selector(matchers: Mapping[str, str]) -> str:
    if not matchers:
        return ""
    body = ",".join(f'{key}="{value}"' for key, value in sorted(matchers.items()))
    return "{" + body + "}"


def _num(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class _Alert:
    name: str
    action: Action
    severity: str
    expr: str
    for_s: float
    summary: str
    description: str


def _backlog(
    t: AlertThresholds, *, name: str, series: str, threshold: float, what: str, sel: str, where: str
) -> _Alert:
    """A queue held over a scale-up threshold: pairs (queueDepth) or tokens (queueTokens)."""
    return _Alert(
        name=name,
        action="scale-up",
        severity="warning",
        expr=f"avg by ({GROUP_BY}) ({series}{sel}) > {_num(threshold)}",
        for_s=t.up_for_s,
        summary=f"{what.capitalize()} queue up in {where}",
        description=(
            f'On average {{{{ $value | printf "%.0f" }}}} {what} wait per pod, above '
            f"{_num(threshold)} for {duration(t.up_for_s)}. The operator adds a pod."
        ),
    )


def _alerts(t: AlertThresholds, matchers: Mapping[str, str]) -> list[_Alert]:
    sel = _selector(matchers)
    by = f"by ({GROUP_BY})"
    by_pod = f"by ({GROUP_BY}, {POD_LABEL})"
    util = f"({GPU_UTIL}{sel} or ({GR_ENGINE_ACTIVE}{sel} * 100))"
    xid_matches = " or ".join(f"({XID_ERRORS}{sel} == {xid})" for xid in sorted(CRITICAL_XIDS))
    where = "{{ $labels.namespace }}/{{ $labels.rerankerdeployment }}"
    # queueTokens is 0 (off) unless set; queueDepth is at least 1
    queues = (
        ("KuberankQueueBacklog", QUEUE_DEPTH, t.queue_depth, "pairs"),
        ("KuberankQueueTokensBacklog", QUEUE_TOKENS, t.queue_tokens, "tokens"),
    )
    backlogs = [
        _backlog(t, name=name, series=series, threshold=limit, what=what, sel=sel, where=where)
        for name, series, limit, what in queues
        if limit > 0
    ]
    return [
        *backlogs,
        _Alert(
            name="KuberankLatencyHigh",
            action="scale-up",
            severity="warning",
            expr=(
                f"histogram_quantile(0.99, sum by ({GROUP_BY}, le) "
                f"(rate({REQUEST_DURATION_BUCKET}{sel}[{duration(t.rate_window_s)}]))) * 1000 "
                f"> {_num(t.p99_latency_ms)}"
            ),
            for_s=t.up_for_s,
            summary=f"p99 request latency is high in {where}",
            description=(
                'p99 latency is {{ $value | printf "%.0f" }} ms, above '
                f"{_num(t.p99_latency_ms)} ms for {duration(t.up_for_s)}. "
                "The operator adds a pod."
            ),
        ),
        _Alert(
            name="KuberankGpuBusy",
            action="scale-up",
            severity="warning",
            expr=f"avg {by} ({util}) > {_num(t.gpu_utilization)}",
            for_s=t.up_for_s,
            summary=f"GPUs of {where} are saturated",
            description=(
                'Mean GPU utilization is {{ $value | printf "%.0f" }} %, above '
                f"{_num(t.gpu_utilization)} % for {duration(t.up_for_s)}. The operator adds a pod."
            ),
        ),
        _Alert(
            name="KuberankGpuIdle",
            action="scale-down",
            severity="info",
            expr=(
                f"avg {by} ({util}) < {_num(t.down_gpu_utilization)}"
                f" and on ({GROUP_BY}) sum {by} ({QUEUE_DEPTH}{sel}) == 0"
                # Missing metrics never scale down: every ready-reporting pod must report util.
                f" and on ({GROUP_BY}) count {by} ({util})"
                f" >= on ({GROUP_BY}) count {by} ({READY}{sel})"
            ),
            for_s=t.down_for_s,
            summary=f"GPUs of {where} are idle",
            description=(
                'Mean GPU utilization is {{ $value | printf "%.0f" }} %, below '
                f"{_num(t.down_gpu_utilization)} % with an empty queue for "
                f"{duration(t.down_for_s)}. The operator removes a pod, down to minReplicas."
            ),
        ),
        _Alert(
            name="KuberankCudaOomRepeated",
            action="restart-pod",
            severity="warning",
            expr=(
                f"sum {by_pod} (increase({CUDA_OOM_TOTAL}{sel}[{duration(t.oom_window_s)}])) "
                f">= {t.oom_max_events}"
            ),
            for_s=0,
            summary="Pod {{ $labels.pod }} keeps running out of GPU memory",
            description=(
                '{{ $value | printf "%.0f" }} CUDA out-of-memory errors in '
                f"{duration(t.oom_window_s)} (limit {t.oom_max_events}). The operator restarts "
                "the pod, within spec.oom.maxRestartsPerHour."
            ),
        ),
        _Alert(
            name="KuberankGpuStuckAfterXid",
            action="restart-pod",
            severity="critical",
            expr=(
                f"max {by_pod} ({xid_matches})"
                f" and on ({NAMESPACE_LABEL}, {POD_LABEL})"
                f" (max {by_pod} ({READY}{sel}) == 0)"
            ),
            for_s=t.stuck_s,
            summary="Pod {{ $labels.pod }} is stuck after critical XID {{ $value }}",
            description=(
                "Its GPU reported a critical XID and the inference server has not been ready "
                f"for {duration(t.stuck_s)}. The operator restarts the pod; if the XID "
                "returns, the GPU needs a reset or replacement."
            ),
        ),
    ]


ALERT_NAMES: tuple[str, ...] = tuple(a.name for a in _alerts(DEFAULT_THRESHOLDS, {}))


def runbook_slug(alert_name: str) -> str:
    """docs/runbooks/<slug>.md for an alert: KuberankGpuIdle -> kuberank-gpu-idle."""
    out: list[str] = []
    for i, char in enumerate(alert_name):
        if char.isupper() and i > 0:
            out.append("-")
        out.append(char.lower())
    return "".join(out)


def render_rule_groups(
    *,
    thresholds: AlertThresholds,
    matchers: Mapping[str, str] | None = None,
    group_name: str = "kuberank",
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
) -> list[dict[str, Any]]:
    """The rule groups; `matchers` restricts every series to one RerankerDeployment."""
    rules: list[dict[str, Any]] = []
    for alert in _alerts(thresholds, dict(matchers or {})):
        rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
        if alert.for_s > 0:
            rule["for"] = duration(alert.for_s)
        rule["labels"] = {"severity": alert.severity, ACTION_LABEL: alert.action}
        rule["annotations"] = {
            "summary": alert.summary,
            "description": alert.description,
            "runbook_url": f"{runbook_base_url.rstrip('/')}/{runbook_slug(alert.name)}.md",
        }
        rules.append(rule)
    return [{"name": group_name, "rules": rules}]


RULES_FILE_HEADER = """\
# kuberank alerting rules with the default thresholds, for a Prometheus without the Prometheus
# Operator. Generated by `python -m kuberank_operator.rendering.alertrules` from the same
# renderer as the per-RerankerDeployment PrometheusRule objects; a test checks this file equals
# its output.
# Series need the labels namespace, pod and rerankerdeployment: see docs/operator/prometheus.md.
"""


def render_rules_file(
    thresholds: AlertThresholds = DEFAULT_THRESHOLDS,
    *,
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
    matchers: Mapping[str, str] | None = None,
) -> str:
    """The plain Prometheus rules file (YAML text)."""
    groups = render_rule_groups(
        thresholds=thresholds, matchers=matchers, runbook_base_url=runbook_base_url
    )
    # No line folding: each expression stays on one line, as people read and grep them.
    body = yaml.safe_dump({"groups": groups}, sort_keys=False, width=10_000)
    return RULES_FILE_HEADER + body


def owner_references(owner: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def render_prometheus_rule(
    *,
    owner: Mapping[str, Any],
    thresholds: AlertThresholds,
    labels: Mapping[str, str],
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
) -> dict[str, Any]:
    """The PrometheusRule of one RerankerDeployment (`owner`), with its own thresholds."""
    name = owner["metadata"]["name"]
    namespace = owner["metadata"]["namespace"]
    return {
        "apiVersion": PROMETHEUS_RULE_API,
        "kind": "PrometheusRule",
        "metadata": {
            "name": f"{name}-kuberank",
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": owner_references(owner),
        },
        "spec": {
            "groups": render_rule_groups(
                thresholds=thresholds,
                matchers={NAMESPACE_LABEL: namespace, CR_LABEL: name},
                group_name=f"kuberank-{namespace}-{name}",
                runbook_base_url=runbook_base_url,
            )
        },
    }


def main() -> None:
    """Print the plain rules file (`python -m kuberank_operator.rendering.alertrules`)."""
    print(render_rules_file(), end="")


if __name__ == "__main__":
    main()
