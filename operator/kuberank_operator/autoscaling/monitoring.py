"""Keep each RerankerDeployment's PodMonitor and PrometheusRule as its spec.monitoring asks.

Only where the API server serves monitoring.coreos.com/v1 PodMonitor and PrometheusRule (the
Prometheus Operator's CRDs); elsewhere nothing is written and one line is logged. Objects are
owned by their RerankerDeployment, so deleting it deletes them; turning a switch off deletes
the object. An unchanged object is not applied again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from kuberank_operator.model import naming
from kuberank_operator.model.naming import Owner
from kuberank_operator.model.policies import OomPolicy, ScalePolicy
from kuberank_operator.model.specs import RerankerSpec
from kuberank_operator.rendering.alertrules import (
    DEFAULT_RUNBOOK_BASE_URL,
    PROMETHEUS_RULE_API,
    render_pod_monitor,
    render_prometheus_rule,
    thresholds_from_policies,
)
from kuberank_operator.rendering.children import content_hash

logger = logging.getLogger(__name__)

KINDS = ("PodMonitor", "PrometheusRule")
# How long a "the CRDs are not installed" answer is trusted before asking again.
DISCOVERY_TTL_S = 60.0


class MonitoringWrites(Protocol):
    """What this module asks of the Kubernetes API adapter (kubeapi.KubeApi)."""

    async def serves_kinds(self, group_version: str, kinds: Sequence[str]) -> bool: ...

    async def apply(self, obj: Mapping[str, Any]) -> Any: ...

    async def delete_object(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> bool: ...


def desired_objects(
    *,
    owner: Owner,
    spec: RerankerSpec,
    scale: ScalePolicy,
    oom: OomPolicy,
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
            thresholds=thresholds_from_policies(scale=scale, oom=oom, interval_s=interval),
            labels=labels,
            runbook_base_url=runbook_base_url,
        )
    return {"PodMonitor": pod_monitor, "PrometheusRule": rule}


class MonitoringSync:
    """Applies and deletes the monitoring objects; remembers what it wrote."""

    def __init__(
        self,
        *,
        api: MonitoringWrites,
        runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._runbook_base_url = runbook_base_url
        self._clock = clock
        self._served: bool | None = None
        self._asked_at = 0.0
        # (namespace, name, kind) -> digest applied, or "" for "known absent".
        self._written: dict[tuple[str, str, str], str] = {}

    async def _crds_served(self) -> bool:
        now = self._clock()
        if self._served is None or now - self._asked_at >= DISCOVERY_TTL_S:
            served = await self._api.serves_kinds(PROMETHEUS_RULE_API, KINDS)
            if served != self._served:
                logger.info(
                    "monitoring.coreos.com/v1 PodMonitor and PrometheusRule are %s",
                    "served: rendering them where spec.monitoring asks"
                    if served
                    else "not served: spec.monitoring.podMonitor/prometheusRule have no effect",
                )
            self._served, self._asked_at = served, now
        return bool(self._served)

    async def sync(
        self, *, owner: Owner, spec: RerankerSpec, scale: ScalePolicy, oom: OomPolicy
    ) -> None:
        wanted = desired_objects(
            owner=owner,
            spec=spec,
            scale=scale,
            oom=oom,
            runbook_base_url=self._runbook_base_url,
        )
        if not any(wanted.values()) and all(
            self._written.get((owner.namespace, owner.name, kind)) == "" for kind in KINDS
        ):
            return
        if not await self._crds_served():
            return
        for kind, obj in wanted.items():
            key = (owner.namespace, owner.name, kind)
            if obj is None:
                if self._written.get(key) != "":
                    await self._api.delete_object(
                        api_version=PROMETHEUS_RULE_API,
                        kind=kind,
                        namespace=owner.namespace,
                        name=f"{owner.name}-kuberank",
                    )
                    self._written[key] = ""
                continue
            digest = content_hash(obj)
            if self._written.get(key) == digest:
                continue
            await self._api.apply(obj)
            self._written[key] = digest
            logger.info(
                "%s/%s: applied %s %s", owner.namespace, owner.name, kind, obj["metadata"]["name"]
            )

    def forget(self, namespace: str, name: str) -> None:
        for kind in KINDS:
            self._written.pop((namespace, name, kind), None)
