"""The builtin evaluator loop and the actions it shares with the Alertmanager webhook.

Every RerankerDeployment is evaluated every `spec.autoscaling.intervalSeconds`: its pods (from
the operator's pod index) are scraped on both ports, the evaluator decides, and the decisions are
carried out here:
- scale: a JSON patch of the resource's scale subresource that first tests the replica count the
  decision started from (so a concurrent change by a person wins), then status.lastScale and an
  Event;
- restart: the pod is deleted (its Deployment replaces it), then status.oom and an Event;
- a restart held back (hourly limit, disruption budget): one Warning Event per pod and reason.
Alerts from the webhook go through the same per-resource lock, memory and guards.
`autoscaling.mode: external` and `off` never scale; OOM restarts act in every mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from kuberank_operator.autoscaling.alertwebhook import AlertRequest
from kuberank_operator.autoscaling.evaluator import DeploymentEvaluator, Evaluation
from kuberank_operator.autoscaling.monitoring import MonitoringSync
from kuberank_operator.autoscaling.oomrestarts import (
    PodHealth,
    RestartDecision,
    RestartPlan,
    plan_restarts,
    restarts_in_last_hour,
)
from kuberank_operator.autoscaling.scaling import (
    Direction,
    ScaleDecision,
    ScaleMemory,
    step_for_alert,
)
from kuberank_operator.cluster.kubeapi import ApiError
from kuberank_operator.cluster.scraping import PodTarget, new_session, scrape_pods
from kuberank_operator.model.indexes import Key, World
from kuberank_operator.model.naming import Owner
from kuberank_operator.model.observations import PodSummary, parse_time, scraped_pods
from kuberank_operator.model.policies import (
    OomPolicy,
    OomPolicyError,
    PolicyError,
    ScalePolicy,
    max_unavailable,
    oom_policy,
    scale_policy,
)
from kuberank_operator.model.signals import FleetSignals
from kuberank_operator.model.specs import RerankerSpec, SpecError, parse_spec
from kuberank_operator.telemetry import metrics

logger = logging.getLogger(__name__)

# How status and Events name who decided.
SOURCE_NAMES = {"builtin": "builtin evaluator", "alert": "Alertmanager webhook"}


class ClusterWrites(Protocol):
    """What the autoscaler asks of the Kubernetes API adapter (kubeapi.KubeApi)."""

    async def patch_scale(
        self, *, namespace: str, name: str, from_replicas: int, to_replicas: int
    ) -> bool: ...

    async def patch_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool: ...

    async def delete_pod(self, *, namespace: str, name: str) -> bool: ...

    async def post_event(
        self, *, owner: Owner, type_: str, reason: str, message: str, action: str
    ) -> None: ...


@dataclass(frozen=True)
class AutoscalerOptions:
    """Operator-wide settings of the evaluator."""

    # False: no scraping and no decisions of its own (Alertmanager's webhook alone acts);
    # monitoring objects are still kept.
    builtin: bool = True
    # How often the loop looks for resources whose interval has come (bounds the jitter).
    tick_s: float = 0.2
    # Scrapes and evaluations of different resources that may run at once.
    concurrency: int = 8
    inference_port: int = 8080
    sidecar_port: int = 9400


@dataclass
class _State:
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


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Resource:
    key: Key
    owner: Owner
    spec: RerankerSpec
    status: Mapping[str, Any]
    scale: ScalePolicy
    oom: OomPolicy


class Autoscaler:
    """Runs the builtin evaluator for every RerankerDeployment and carries out decisions."""

    def __init__(
        self,
        *,
        api: ClusterWrites,
        world: World,
        options: AutoscalerOptions,
        monitoring: MonitoringSync | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self._monitoring = monitoring
        self._world = world
        self._options = options
        self._clock = clock
        self._states: dict[Key, _State] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(options.concurrency)
        self._running: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, *, loop: bool = True) -> None:
        """Open the scrape session and start the loop (loop=False: the caller drives
        evaluate() itself, as tests and benchmarks do)."""
        if self._session is None:
            self._session = new_session(timeout_s=5.0)
        if loop and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="kuberank-autoscaler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _state(self, key: Key) -> _State:
        return self._states.setdefault(key, _State())

    async def _loop(self) -> None:
        while True:
            now = self._clock()
            keys = set(self._world.rrd_keys())
            for gone in set(self._states) - keys:
                del self._states[gone]
                if self._monitoring is not None:
                    self._monitoring.forget(*gone)
            for key in sorted(keys):
                state = self._state(key)
                if state.running or now < state.next_at:
                    continue
                state.running = True
                task = asyncio.create_task(self._evaluate_guarded(key), name=f"evaluate {key}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            await asyncio.sleep(self._options.tick_s)

    async def _evaluate_guarded(self, key: Key) -> None:
        state = self._state(key)
        now = self._clock()
        # On schedule: judge at the scheduled time; late (first run, overload): start anew.
        due = state.next_at if 0 <= now - state.next_at < 1.0 else now
        try:
            async with self._slots:
                interval = await self.evaluate(key, at=due)
            # A fixed rate, not a fixed pause: evaluations stay `interval` apart however long
            # one takes, so `for` durations are judged on a steady clock.
            state.next_at = max(due + interval, self._clock() + self._options.tick_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("evaluation of %s/%s failed; retrying next interval", *key)
            state.next_at = self._clock() + 15.0
        finally:
            state.running = False

    # --- reading a resource --------------------------------------------------------------

    def _resource(self, key: Key) -> _Resource | str:
        """The resource and its policies, or why it cannot be used now."""
        body = self._world.rrd(key)
        if body is None:
            return "unknown RerankerDeployment"
        meta = body.get("metadata") or {}
        if meta.get("deleting"):
            return "RerankerDeployment is being deleted"
        try:
            spec = parse_spec(body.get("spec") or {})
            scale = scale_policy(spec.autoscaling)
            oom = oom_policy(spec.oom)
            max_unavailable(spec.rollout.max_unavailable, replicas=spec.replicas)
        except (SpecError, PolicyError, OomPolicyError) as exc:
            return f"spec cannot be used: {exc}"
        owner = Owner(
            namespace=key[0],
            name=key[1],
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
        )
        status = body.get("status") or {}
        return _Resource(key=key, owner=owner, spec=spec, status=status, scale=scale, oom=oom)

    def _sync_from_status(self, state: _State, resource: _Resource) -> None:
        last = resource.status.get("lastScale") or {}
        at = parse_time(last.get("time"))
        before, after = last.get("from"), last.get("to")
        direction = None
        if isinstance(before, int) and isinstance(after, int):
            direction = "up" if after > before else "down"
        state.evaluator.adopt_last_scale(at=at, direction=direction)
        if not state.seeded:
            # Restarts by an earlier process still count against the hourly limit: assume all
            # happened at the last one (never earlier), so the limit is never exceeded.
            oom_status = resource.status.get("oom") or {}
            last_time = parse_time(oom_status.get("lastRestartTime"))
            count = oom_status.get("restartsLastHour")
            if last_time is not None and isinstance(count, int):
                state.restart_times = [last_time] * count
            state.seeded = True

    # --- the builtin evaluation ----------------------------------------------------------

    async def evaluate(self, key: Key, *, at: float | None = None) -> float:
        """Scrape, decide and act for one resource; returns seconds until the next time.

        `at` is the evaluation's scheduled time: `for` durations and rates are judged on that
        steady clock, so a slow scrape cannot make a held threshold miss its evaluation.
        """
        resource = self._resource(key)
        state = self._state(key)
        if isinstance(resource, str):
            if resource != state.spec_error:
                logger.warning("not evaluating %s/%s: %s", *key, resource)
                state.spec_error = resource
            return 15.0
        state.spec_error = None
        interval = float(resource.spec.autoscaling.interval_seconds)
        if self._monitoring is not None:
            try:
                await self._monitoring.sync(
                    owner=resource.owner, spec=resource.spec, scale=resource.scale, oom=resource.oom
                )
            except ApiError as exc:
                logger.warning("%s/%s: monitoring objects not written: %s", *key, exc)
        if not self._options.builtin:
            return interval
        started = self._clock()
        tick = started if at is None else at
        pods = self._world.pods(key)
        targets = [
            PodTarget(pod=p.name, ip=p.ip, sidecar=resource.spec.sidecar.enabled)
            for p in scraped_pods(pods)
        ]
        assert self._session is not None
        scrapes = await scrape_pods(
            self._session,
            targets,
            taken_at=tick,
            inference_port=self._options.inference_port,
            sidecar_port=self._options.sidecar_port,
        )
        async with state.lock:
            now = tick
            self._sync_from_status(state, resource)
            keep = max(resource.oom.window_s, 4 * interval) + 2 * interval
            state.evaluator.record(scrapes, keep_s=keep, now=now)
            evaluation = state.evaluator.evaluate(
                pods=pods,
                scale_policy=resource.scale,
                oom_policy=resource.oom,
                replicas=resource.spec.replicas,
                max_unavailable=max_unavailable(
                    resource.spec.rollout.max_unavailable, replicas=resource.spec.replicas
                ),
                restart_times=state.restart_times,
                vram_margin=resource.spec.gpu.vram_safety_margin,
                interval_s=interval,
                now=now,
                token_budget=resource.spec.batching.max_batch_tokens,
            )
            self._log_signals(resource, evaluation)
            await self._report_token_budget(resource, state, evaluation.reduced_token_budget)
            if evaluation.scale is not None:
                await self._scale(resource, state, evaluation.scale, source="builtin")
            await self._restarts(resource, state, evaluation, source="builtin")
        metrics.EVALUATIONS.observe(self._clock() - started)
        return interval

    @staticmethod
    def _log_signals(resource: _Resource, evaluation: Evaluation) -> None:
        s = evaluation.signals
        logger.debug(
            "%s/%s: %d/%d pods reporting, queue %s, p99 %s ms, GPU %s %%, %d over the VRAM "
            "safety margin",
            *resource.key,
            len(s.pods),
            s.pods_expected,
            s.mean_queue_depth,
            s.p99_latency_ms,
            s.mean_gpu_utilization,
            sum(1 for p in s.pods if p.vram_over_margin),
        )

    async def _report_token_budget(self, resource: _Resource, state: _State, budget: int) -> None:
        """status.oom.reducedMaxBatchTokens: say when pods run a lowered budget after OOMs."""
        known = (resource.status.get("oom") or {}).get("reducedMaxBatchTokens", 0)
        if state.reported_budget is None:
            state.reported_budget = int(known or 0)
        if budget == state.reported_budget:
            return
        await self._api.patch_status(
            namespace=resource.owner.namespace,
            name=resource.owner.name,
            status={"oom": {"reducedMaxBatchTokens": budget}},
        )
        if budget:
            await self._api.post_event(
                owner=resource.owner,
                type_="Warning",
                reason="TokenBudgetReduced",
                message=f"a pod lowered its batch token budget to {budget} after CUDA "
                f"out-of-memory errors (spec.batching.maxBatchTokens is "
                f"{resource.spec.batching.max_batch_tokens})",
                action="Observe",
            )
        state.reported_budget = budget

    # --- actions -------------------------------------------------------------------------

    async def _scale(
        self, resource: _Resource, state: _State, decision: ScaleDecision, *, source: str
    ) -> bool:
        namespace, name = resource.key
        written = await self._api.patch_scale(
            namespace=namespace,
            name=name,
            from_replicas=decision.from_replicas,
            to_replicas=decision.to_replicas,
        )
        if not written:
            logger.info(
                "%s/%s: replicas changed by someone else; not scaling %d -> %d",
                namespace,
                name,
                decision.from_replicas,
                decision.to_replicas,
            )
            return False
        now = self._clock()
        metrics.SCALE_DECISIONS.labels(decision.direction, source).inc()
        reason = f"{decision.reason} ({SOURCE_NAMES[source]})"
        logger.info(
            "%s/%s: scaled %d -> %d: %s",
            namespace,
            name,
            decision.from_replicas,
            decision.to_replicas,
            reason,
        )
        await self._api.patch_status(
            namespace=namespace,
            name=name,
            status={
                "lastScale": {
                    "time": utc(now),
                    "from": decision.from_replicas,
                    "to": decision.to_replicas,
                    "reason": reason,
                }
            },
        )
        up = decision.direction == "up"
        await self._api.post_event(
            owner=resource.owner,
            type_="Normal",
            reason="ScaledUp" if up else "ScaledDown",
            message=f"replicas {decision.from_replicas} -> {decision.to_replicas}: {reason}",
            action="Scale",
        )
        return True

    async def _restarts(
        self, resource: _Resource, state: _State, evaluation: Evaluation, *, source: str
    ) -> list[str]:
        outcomes = []
        for decision in evaluation.restarts.restarts:
            outcomes.append(await self._restart(resource, state, decision, source=source))
        for decision, why in evaluation.restarts.held_back:
            cause = "rate-limit" if why.startswith("rate limit") else "budget"
            outcomes.append(f"held back: {why}")
            if (decision.pod, cause) in state.held_reported:
                continue
            state.held_reported.add((decision.pod, cause))
            metrics.RESTARTS_HELD.labels(cause).inc()
            logger.warning(
                "%s/%s: not restarting pod %s (%s): %s",
                *resource.key,
                decision.pod,
                decision.reason,
                why,
            )
            await self._api.post_event(
                owner=resource.owner,
                type_="Warning",
                reason="RestartHeldBack",
                message=f"pod {decision.pod} needs a restart ({decision.reason}) but {why}",
                action="RestartPod",
            )
        return outcomes

    async def _restart(
        self, resource: _Resource, state: _State, decision: RestartDecision, *, source: str
    ) -> str:
        namespace, name = resource.key
        deleted = await self._api.delete_pod(namespace=namespace, name=decision.pod)
        state.evaluator.forget_pod(decision.pod)
        if not deleted:
            return f"pod {decision.pod} already gone"
        now = self._clock()
        state.restart_times = restarts_in_last_hour([*state.restart_times, now], now=now)
        metrics.POD_RESTARTS.labels(decision.kind, source).inc()
        previous = resource.status.get("oom") or {}
        total = max(int(previous.get("restarts") or 0), state.restarts_written) + 1
        state.restarts_written = total
        reason = f"{decision.reason} ({SOURCE_NAMES[source]})"
        logger.warning("%s/%s: restarted pod %s: %s", namespace, name, decision.pod, reason)
        await self._api.patch_status(
            namespace=namespace,
            name=name,
            status={
                "oom": {
                    "restarts": total,
                    "lastRestartTime": utc(now),
                    "lastReason": reason,
                    "lastPod": decision.pod,
                    "restartsLastHour": len(state.restart_times),
                }
            },
        )
        await self._api.post_event(
            owner=resource.owner,
            type_="Warning",
            reason="PodRestarted",
            message=f"deleted pod {decision.pod} so its Deployment replaces it: {reason}",
            action="RestartPod",
        )
        return f"restarted pod {decision.pod}"

    # --- the webhook's actions -----------------------------------------------------------

    async def act(self, alert: AlertRequest) -> str:
        """Carry out one firing alert (AlertActions for the webhook receiver)."""
        key = (alert.namespace, alert.name)
        resource = self._resource(key)
        if isinstance(resource, str):
            metrics.ALERTS.labels(alert.action, "ignored").inc()
            return f"ignored: {resource} {alert.namespace}/{alert.name}"
        if not resource.spec.monitoring.alert_webhook:
            metrics.ALERTS.labels(alert.action, "ignored").inc()
            return "ignored: spec.monitoring.alertWebhook is false"
        state = self._state(key)
        async with state.lock:
            self._sync_from_status(state, resource)
            if alert.action in ("scale-up", "scale-down"):
                outcome = await self._act_scale(resource, state, alert)
            else:
                outcome = await self._act_restart(resource, state, alert)
        metrics.ALERTS.labels(alert.action, outcome.split(":")[0].split(" ")[0]).inc()
        return outcome

    async def _act_scale(self, resource: _Resource, state: _State, alert: AlertRequest) -> str:
        if not resource.scale.scales:
            return f"unchanged: spec.autoscaling.mode is {resource.scale.mode}"
        direction: Direction = "up" if alert.action == "scale-up" else "down"
        now = self._clock()
        decision = step_for_alert(
            policy=resource.scale,
            direction=direction,
            replicas=resource.spec.replicas,
            memory=state.evaluator.memory,
            now=now,
            reason=f"alert {alert.alertname}: {alert.summary}".rstrip(": "),
        )
        if decision is None:
            return "unchanged: inside the cooldown or at the replica bound"
        if not await self._scale(resource, state, decision, source="alert"):
            return "unchanged: replicas changed meanwhile"
        state.evaluator.memory = ScaleMemory(last_scale_at=now, last_direction=direction)
        return f"acted: scaled {decision.from_replicas} -> {decision.to_replicas}"

    async def _act_restart(self, resource: _Resource, state: _State, alert: AlertRequest) -> str:
        pods = self._world.pods(resource.key)
        target = next((p for p in pods if p.name == alert.pod and not p.deleting), None)
        if target is None:
            return f"unchanged: pod {alert.pod} is gone (already replaced)"
        now = self._clock()
        stuck = alert.alertname == "KuberankGpuStuckAfterXid"
        health = [
            _health(
                p,
                wanted=p.name == target.name,
                stuck=stuck,
                policy=resource.oom,
                now=now,
            )
            for p in pods
        ]
        plan = plan_restarts(
            policy=resource.oom,
            pods=health,
            replicas=resource.spec.replicas,
            max_unavailable=max_unavailable(
                resource.spec.rollout.max_unavailable, replicas=resource.spec.replicas
            ),
            restart_times=restarts_in_last_hour(state.restart_times, now=now),
            now=now,
        )
        because = f"alert {alert.alertname}"
        plan = RestartPlan(
            restarts=tuple(replace(d, reason=because) for d in plan.restarts),
            held_back=tuple((replace(d, reason=because), why) for d, why in plan.held_back),
        )
        evaluation = Evaluation(signals=_NO_SIGNALS, scale=None, restarts=plan)
        outcomes = await self._restarts(resource, state, evaluation, source="alert")
        if not outcomes:
            return "unchanged: nothing to restart"
        return ("acted: " if plan.restarts else "unchanged: ") + "; ".join(outcomes)


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


_NO_SIGNALS = FleetSignals(
    pods_expected=0,
    pods=(),
    mean_queue_depth=None,
    p99_latency_ms=None,
    mean_gpu_utilization=None,
    complete=False,
)
