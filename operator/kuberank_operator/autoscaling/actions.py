"""Carry out the autoscaler's decisions through the actuator, and write what it owns of status.

Shared by the builtin evaluation loop (loop.py) and the alert actions (alerts.py): the same
per-resource memory, lock and guards.
- scale: the scale subresource, testing the replica count the decision started from (a person's
  concurrent change wins), then status.lastScale (field manager kuberank-autoscaler; with the
  alert that asked for it, if one did) and an Event;
- restart: the pod is deleted (its Deployment replaces it), then status.oom's restart record
  (kuberank-oom) and an Event;
- once the change is made, a failed status write or Event is logged, never raised: the caller
  must not take the change for undone (and retry it into a second one);
- a restart held back (hourly limit, disruption budget): one Warning Event per pod and cause;
- a pod running a lowered token budget: status.oom.reducedMaxBatchTokens (kuberank-token-budget).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kuberank_operator.autoscaling.alertguards import ActedAlerts, AlertIdentity
from kuberank_operator.autoscaling.evaluator import DeploymentEvaluator
from kuberank_operator.autoscaling.oomrestarts import (
    HeldBack,
    RestartDecision,
    RestartPlan,
    restarts_in_last_hour,
)
from kuberank_operator.autoscaling.scaling import ScaleDecision
from kuberank_operator.cluster.actuator import Actuator
from kuberank_operator.cluster.kubeapi import ApiError
from kuberank_operator.cluster.outcomes import Refused, Restarted
from kuberank_operator.model.calibrations import PodSetting, calibration_status
from kuberank_operator.model.naming import Owner, StatusWriter
from kuberank_operator.model.observations import parse_time
from kuberank_operator.model.resources import Key, Policies, ResourceView
from kuberank_operator.model.specs import RerankerSpec
from kuberank_operator.telemetry import metrics

logger = logging.getLogger(__name__)


class Source(StrEnum):
    """Who decided (the `source` label of the autoscaler's metrics)."""

    BUILTIN = "builtin"
    ALERT = "alert"


# How status and Events name who decided.
SOURCE_NAMES = {Source.BUILTIN: "builtin evaluator", Source.ALERT: "Alertmanager webhook"}

RestartOutcome = Restarted | Refused | HeldBack


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ResourceState:
    """Per resource, what the autoscaler remembers between evaluations (not across restarts:
    what must survive is read back from status)."""

    evaluator: DeploymentEvaluator = field(default_factory=DeploymentEvaluator)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_at: float = 0.0
    restart_times: list[float] = field(default_factory=list)
    seeded: bool = False
    # (pod, cause) pairs already reported as held back, so each is one Event, not one a tick.
    held_reported: set[tuple[str, str]] = field(default_factory=set)
    spec_error: str | None = None
    running: bool = False
    # Restarts this process wrote into status.oom.restarts (the index may lag behind).
    restarts_written: int = 0
    # status.oom.reducedMaxBatchTokens as last written (None: not yet read from status).
    reported_budget: int | None = None
    # Alerts that changed something (or may have): a re-sent one never acts again.
    acted_alerts: ActedAlerts = field(default_factory=ActedAlerts)
    # Each pod's batching setting as last scraped, and status.calibration as last written
    # (None: not yet read from status).
    pod_settings: dict[str, PodSetting] = field(default_factory=dict)
    reported_calibration: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Target:
    """A resource the autoscaler may act on: its view, with the spec and policies it has."""

    view: ResourceView
    spec: RerankerSpec
    policies: Policies

    @property
    def key(self) -> Key:
        return self.view.key

    @property
    def owner(self) -> Owner:
        return self.view.owner


def target(view: ResourceView | None) -> Target | str:
    """The resource to act on, or why it cannot be used now."""
    if view is None:
        return "unknown RerankerDeployment"
    why = view.unusable
    if why is not None or view.spec is None or view.policies is None:
        return why or "spec cannot be used"
    return Target(view=view, spec=view.spec, policies=view.policies)


class Actions:
    def __init__(self, *, actuator: Actuator, clock: Callable[[], float]) -> None:
        self._actuator = actuator
        self._clock = clock

    @staticmethod
    def sync_from_status(state: ResourceState, resource: Target) -> None:
        status = resource.view.status
        last = status.get("lastScale") or {}
        at = parse_time(last.get("time"))
        before, after = last.get("from"), last.get("to")
        direction = None
        if isinstance(before, int) and isinstance(after, int):
            direction = "up" if after > before else "down"
        state.evaluator.adopt_last_scale(at=at, direction=direction)
        acted = AlertIdentity.from_status(last.get("alert"))
        if acted is not None:
            state.acted_alerts.add(acted)
        if not state.seeded:
            # Restarts by an earlier process still count against the hourly limit: assume all
            # happened at the last one (never earlier), so the limit is never exceeded.
            oom_status = status.get("oom") or {}
            last_time = parse_time(oom_status.get("lastRestartTime"))
            count = oom_status.get("restartsLastHour")
            if last_time is not None and isinstance(count, int):
                state.restart_times = [last_time] * count
            state.seeded = True

    async def report_token_budget(
        self, resource: Target, state: ResourceState, budget: int
    ) -> None:
        """status.oom.reducedMaxBatchTokens: say when pods run a lowered budget after OOMs."""
        known = (resource.view.status.get("oom") or {}).get("reducedMaxBatchTokens", 0)
        if state.reported_budget is None:
            state.reported_budget = int(known or 0)
        if budget == state.reported_budget:
            return
        await self._actuator.write_status(
            owner=resource.owner,
            writer=StatusWriter.TOKEN_BUDGET,
            fields={"oom": {"reducedMaxBatchTokens": budget}},
        )
        if budget:
            configured = resource.spec.batching.max_batch_tokens
            await self._actuator.post_event(
                owner=resource.owner,
                type_="Warning",
                reason="TokenBudgetReduced",
                message=f"a pod lowered its batch token budget to {budget} after CUDA "
                f"out-of-memory errors, below the budget it started with (spec.batching."
                f"maxBatchTokens is {configured or '0: calibrated, see status.calibration'})",
                action="Observe",
            )
        state.reported_budget = budget

    async def report_calibration(
        self, resource: Target, state: ResourceState, settings: Mapping[str, PodSetting]
    ) -> None:
        """status.calibration: what the pods run at, per GPU model (written when it changes)."""
        state.pod_settings = dict(settings)
        entries = calibration_status(settings.values())
        if state.reported_calibration is None:
            state.reported_calibration = list(resource.view.status.get("calibration") or [])
        if entries == state.reported_calibration:
            return
        await self._actuator.write_status(
            owner=resource.owner, writer=StatusWriter.CALIBRATION, fields={"calibration": entries}
        )
        state.reported_calibration = entries

    async def scale(
        self,
        resource: Target,
        decision: ScaleDecision,
        *,
        source: Source,
        alert: AlertIdentity | None = None,
    ) -> bool:
        """Scale as decided; False when the replicas changed meanwhile (or the resource left).

        An ApiError from the scale itself is raised (the step may or may not be written); once
        the step is written, this returns True whatever becomes of status and the Event.
        """
        namespace, name = resource.key
        outcome = await self._actuator.scale(
            owner=resource.owner,
            from_replicas=decision.from_replicas,
            to_replicas=decision.to_replicas,
        )
        if isinstance(outcome, Refused):
            logger.info(
                "%s/%s: replicas changed by someone else; not scaling %d -> %d",
                namespace,
                name,
                decision.from_replicas,
                decision.to_replicas,
            )
            return False
        now = self._clock()
        metrics.SCALE_DECISIONS.labels(decision.direction, source.value).inc()
        reason = f"{decision.reason} ({SOURCE_NAMES[source]})"
        logger.info(
            "%s/%s: scaled %d -> %d: %s",
            namespace,
            name,
            decision.from_replicas,
            decision.to_replicas,
            reason,
        )
        last_scale: dict[str, object] = {
            "time": utc(now),
            "from": decision.from_replicas,
            "to": decision.to_replicas,
            "reason": reason,
        }
        if alert is not None:
            last_scale["alert"] = alert.to_status()
        up = decision.direction == "up"
        await self._record(
            resource,
            writer=StatusWriter.AUTOSCALER,
            fields={"lastScale": last_scale},
            event=("Normal", "ScaledUp" if up else "ScaledDown", "Scale"),
            message=f"replicas {decision.from_replicas} -> {decision.to_replicas}: {reason}",
        )
        return True

    async def _record(
        self,
        resource: Target,
        *,
        writer: StatusWriter,
        fields: dict[str, object],
        event: tuple[str, str, str],
        message: str,
    ) -> None:
        """After a change is made: its status fields, then its Event (type, reason, action). A
        failure is logged, never raised: the caller must not take the change for undone."""
        type_, reason, action = event
        try:
            await self._actuator.write_status(owner=resource.owner, writer=writer, fields=fields)
            await self._actuator.post_event(
                owner=resource.owner, type_=type_, reason=reason, message=message, action=action
            )
        except ApiError as exc:
            logger.warning(
                "%s/%s: %s done, but status.%s or its Event not written: %s",
                *resource.key,
                reason,
                ", ".join(fields),
                exc,
            )

    async def restarts(
        self, resource: Target, state: ResourceState, plan: RestartPlan, *, source: Source
    ) -> list[RestartOutcome]:
        outcomes: list[RestartOutcome] = []
        for decision in plan.restarts:
            outcomes.append(await self._restart(resource, state, decision, source=source))
        for held in plan.held:
            outcomes.append(held)
            pod = held.decision.pod
            if (pod, held.cause.value) in state.held_reported:
                continue
            state.held_reported.add((pod, held.cause.value))
            metrics.RESTARTS_HELD.labels(held.cause.value).inc()
            logger.warning(
                "%s/%s: not restarting pod %s (%s): %s",
                *resource.key,
                pod,
                held.decision.reason,
                held.why,
            )
            await self._actuator.post_event(
                owner=resource.owner,
                type_="Warning",
                reason="RestartHeldBack",
                message=f"pod {pod} needs a restart ({held.decision.reason}) but {held.why}",
                action="RestartPod",
            )
        return outcomes

    async def _restart(
        self, resource: Target, state: ResourceState, decision: RestartDecision, *, source: Source
    ) -> Restarted | Refused:
        namespace, name = resource.key
        outcome = await self._actuator.restart_pod(namespace=namespace, pod=decision.pod)
        state.evaluator.forget_pod(decision.pod)
        if isinstance(outcome, Refused):
            return Refused(cause=outcome.cause, message=f"pod {decision.pod} already gone")
        now = self._clock()
        state.restart_times = restarts_in_last_hour([*state.restart_times, now], now=now)
        metrics.POD_RESTARTS.labels(decision.kind, source.value).inc()
        previous = resource.view.status.get("oom") or {}
        total = max(int(previous.get("restarts") or 0), state.restarts_written) + 1
        state.restarts_written = total
        reason = f"{decision.reason} ({SOURCE_NAMES[source]})"
        logger.warning("%s/%s: restarted pod %s: %s", namespace, name, decision.pod, reason)
        record = {
            "restarts": total,
            "lastRestartTime": utc(now),
            "lastReason": reason,
            "lastPod": decision.pod,
            "restartsLastHour": len(state.restart_times),
        }
        await self._record(
            resource,
            writer=StatusWriter.OOM_RESTARTS,
            fields={"oom": record},
            event=("Warning", "PodRestarted", "RestartPod"),
            message=f"deleted pod {decision.pod} so its Deployment replaces it: {reason}",
        )
        return outcome
