"""Alert to action: one firing kuberank alert from the webhook becomes a scale step or a restart.

The same per-resource lock, memory and guards as the builtin evaluator (actions.py): bounds,
cooldowns, the hourly restart limit and the disruption budget. Prometheus already checked the
threshold, so an alert is taken as the evaluation's result. Two guards of its own
(alertguards.py): an alert acts only in the namespaces --alert-webhook-namespaces allows, and
each alert (fingerprint and startsAt) acts at most once, so a notification Alertmanager sends
again after an error or a lost answer never makes a second step. Each alert answers with a typed
outcome (acted, unchanged, ignored, refused, failed), which is also the `outcome` label of
kuberank_operator_alerts_total.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from kuberank_operator.autoscaling.actions import (
    Actions,
    ResourceState,
    RestartOutcome,
    Source,
    Target,
    target,
)
from kuberank_operator.autoscaling.alertguards import AlertScope
from kuberank_operator.autoscaling.alertpayloads import AlertOutcome, AlertRequest, AlertResult
from kuberank_operator.autoscaling.oomrestarts import (
    HeldBack,
    PodHealth,
    RestartPlan,
    plan_restarts,
    restarts_in_last_hour,
)
from kuberank_operator.autoscaling.scaling import Direction, ScaleMemory, step_for_alert
from kuberank_operator.cluster.kubeapi import ApiError
from kuberank_operator.cluster.outcomes import Restarted
from kuberank_operator.model.indexes import World
from kuberank_operator.model.observations import PodSummary
from kuberank_operator.model.policies import OomPolicy
from kuberank_operator.model.resources import Key

STUCK_ALERT = "KuberankGpuStuckAfterXid"


def _unchanged(detail: str) -> AlertOutcome:
    return AlertOutcome(AlertResult.UNCHANGED, detail)


def _already(alert: AlertRequest) -> AlertOutcome:
    return _unchanged(f"already acted on this alert: {alert.identity}")


def _said(outcome: RestartOutcome) -> str:
    if isinstance(outcome, Restarted):
        return f"restarted pod {outcome.pod}"
    if isinstance(outcome, HeldBack):
        return f"held back: {outcome.why}"
    return outcome.message


class AlertResponder:
    """Carries out firing alerts (the webhook's AlertActions)."""

    def __init__(
        self,
        *,
        world: World,
        actions: Actions,
        state: Callable[[Key], ResourceState],
        clock: Callable[[], float],
        scope: AlertScope,
    ) -> None:
        self._world = world
        self._actions = actions
        self._state = state
        self._clock = clock
        self._scope = scope

    async def act(self, alert: AlertRequest) -> AlertOutcome:
        key = (alert.namespace, alert.name)
        if not self._scope.allows(alert.namespace):
            # Before the lookup: an alert learns nothing of resources outside its scope.
            return AlertOutcome(
                AlertResult.REFUSED,
                f"namespace {alert.namespace!r} is outside --alert-webhook-namespaces "
                f"({self._scope})",
            )
        resource = target(self._world.rrd(key))
        if isinstance(resource, str):
            outcome = AlertOutcome(
                AlertResult.IGNORED, f"{resource} {alert.namespace}/{alert.name}"
            )
        elif not resource.spec.monitoring.alert_webhook:
            outcome = AlertOutcome(AlertResult.IGNORED, "spec.monitoring.alertWebhook is false")
        else:
            state = self._state(key)
            async with state.lock:
                self._actions.sync_from_status(state, resource)
                if alert.action in ("scale-up", "scale-down"):
                    outcome = await self._scale(resource, state, alert)
                else:
                    outcome = await self._restart(resource, state, alert)
        return outcome

    async def _scale(
        self, resource: Target, state: ResourceState, alert: AlertRequest
    ) -> AlertOutcome:
        scale = resource.policies.scale
        if not scale.scales:
            return _unchanged(f"spec.autoscaling.mode is {scale.mode}")
        direction: Direction = "up" if alert.action == "scale-up" else "down"
        now = self._clock()
        decision = step_for_alert(
            policy=scale,
            direction=direction,
            replicas=resource.spec.replicas,
            memory=state.evaluator.memory,
            now=now,
            reason=f"alert {alert.alertname}: {alert.summary}".rstrip(": "),
        )
        if decision is None:
            return _unchanged("inside the cooldown or at the replica bound")
        identity = alert.identity
        if identity in state.acted_alerts:
            return _already(alert)
        # Claimed before the write: if the answer is lost, the step may be written all the same.
        state.acted_alerts.add(identity)
        try:
            scaled = await self._actions.scale(
                resource, decision, source=Source.ALERT, alert=identity
            )
        except ApiError as exc:
            if 400 <= exc.status < 500:
                # The API server refused the request itself: nothing was written.
                state.acted_alerts.discard(identity)
                return AlertOutcome(AlertResult.FAILED, f"scale refused: {exc}", retry=True)
            return AlertOutcome(
                AlertResult.FAILED,
                f"scale not confirmed ({exc}); not acting on this alert again, the step may "
                "have been written",
            )
        if not scaled:
            state.acted_alerts.discard(identity)
            return _unchanged("replicas changed meanwhile")
        state.evaluator.memory = ScaleMemory(last_scale_at=now, last_direction=direction)
        return AlertOutcome(
            AlertResult.ACTED, f"scaled {decision.from_replicas} -> {decision.to_replicas}"
        )

    async def _restart(
        self, resource: Target, state: ResourceState, alert: AlertRequest
    ) -> AlertOutcome:
        pods = self._world.pods(resource.key)
        wanted = next((p for p in pods if p.name == alert.pod and not p.deleting), None)
        if wanted is None:
            return _unchanged(f"pod {alert.pod} is gone (already replaced)")
        now = self._clock()
        oom = resource.policies.oom
        stuck = alert.alertname == STUCK_ALERT
        health = [
            _health(p, wanted=p.name == wanted.name, stuck=stuck, policy=oom, now=now) for p in pods
        ]
        plan = plan_restarts(
            policy=oom,
            pods=health,
            replicas=resource.spec.replicas,
            max_unavailable=resource.policies.max_unavailable,
            restart_times=restarts_in_last_hour(state.restart_times, now=now),
            now=now,
        )
        because = f"alert {alert.alertname}"
        plan = RestartPlan(
            restarts=tuple(replace(d, reason=because) for d in plan.restarts),
            held=tuple(replace(h, decision=replace(h.decision, reason=because)) for h in plan.held),
        )
        identity = alert.identity
        if plan.restarts and identity in state.acted_alerts:
            return _already(alert)
        if plan.restarts:
            state.acted_alerts.add(identity)
        try:
            outcomes = await self._actions.restarts(resource, state, plan, source=Source.ALERT)
        except ApiError as exc:
            # Deleting a pod twice is harmless (the second finds it gone): a retry may try again.
            state.acted_alerts.discard(identity)
            return AlertOutcome(AlertResult.FAILED, f"restart failed: {exc}", retry=True)
        if not outcomes:
            return _unchanged("nothing to restart")
        result = AlertResult.ACTED if plan.restarts else AlertResult.UNCHANGED
        return AlertOutcome(result, "; ".join(_said(o) for o in outcomes))


def _health(
    pod: PodSummary, *, wanted: bool, stuck: bool, policy: OomPolicy, now: float
) -> PodHealth:
    """A pod as the alert describes it: Prometheus already checked the threshold."""
    return PodHealth(
        name=pod.name,
        ready=pod.ready,
        terminating=pod.deleting,
        cuda_ooms_in_window=float(policy.max_events) if wanted and not stuck else None,
        oom_killed_at=None,
        stuck_since=now - policy.stuck_s if wanted and stuck else None,
        stuck_xid=None,
    )
