"""Keep each RerankerDeployment's PodMonitor and PrometheusRule as its spec.monitoring asks.

Only where the API server serves monitoring.coreos.com/v1 PodMonitor and PrometheusRule (the
Prometheus Operator's CRDs); elsewhere nothing is written and one line is logged. Objects are
owned by their RerankerDeployment, so deleting it deletes them; turning a switch off deletes
the object. An unchanged object is not applied again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from kuberank_operator.cluster.actuator import Actuator
from kuberank_operator.cluster.outcomes import Refused
from kuberank_operator.model.naming import Owner
from kuberank_operator.model.resources import Policies
from kuberank_operator.model.specs import RerankerSpec
from kuberank_operator.rendering.alertrules import DEFAULT_RUNBOOK_BASE_URL, PROMETHEUS_RULE_API
from kuberank_operator.rendering.children import content_hash
from kuberank_operator.rendering.monitoring import KINDS, desired_objects

logger = logging.getLogger(__name__)

# How long a "the CRDs are not installed" answer is trusted before asking again.
DISCOVERY_TTL_S = 60.0


class Discovery(Protocol):
    """What this module reads of the Kubernetes API (kubeapi.KubeApi): which kinds are served."""

    async def serves_kinds(self, group_version: str, kinds: Sequence[str]) -> bool: ...


class MonitoringSync:
    """Applies and deletes the monitoring objects; remembers what it wrote."""

    def __init__(
        self,
        *,
        api: Discovery,
        actuator: Actuator,
        runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._actuator = actuator
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

    async def sync(self, *, owner: Owner, spec: RerankerSpec, policies: Policies) -> None:
        wanted = desired_objects(
            owner=owner, spec=spec, policies=policies, runbook_base_url=self._runbook_base_url
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
                    await self._actuator.delete(
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
            applied = await self._actuator.apply(obj)
            if isinstance(applied, Refused):
                logger.warning(
                    "%s/%s: %s not written: %s", owner.namespace, owner.name, kind, applied.message
                )
                return
            self._written[key] = digest
            logger.info(
                "%s/%s: applied %s %s", owner.namespace, owner.name, kind, obj["metadata"]["name"]
            )

    def forget(self, namespace: str, name: str) -> None:
        for kind in KINDS:
            self._written.pop((namespace, name, kind), None)
