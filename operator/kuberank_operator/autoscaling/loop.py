"""The builtin evaluation loop: every RerankerDeployment, every spec.autoscaling.intervalSeconds.

Its pods (from the operator's pod index) are scraped on both ports, the evaluator decides, and
actions.py carries the decisions out through the actuator. Alerts from the webhook (alerts.py)
share the same per-resource state and lock. `autoscaling.mode: external` and `off` never scale;
OOM restarts act in every mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from kuberank_operator.autoscaling.actions import (
    Actions,
    ResourceState,
    Source,
    Target,
    target,
)
from kuberank_operator.autoscaling.alertguards import EVERY_NAMESPACE, AlertScope
from kuberank_operator.autoscaling.alertpayloads import AlertOutcome, AlertRequest
from kuberank_operator.autoscaling.alerts import AlertResponder
from kuberank_operator.autoscaling.evaluator import Evaluation
from kuberank_operator.autoscaling.monitoring import MonitoringSync
from kuberank_operator.cluster import tasks
from kuberank_operator.cluster.actuator import Actuator
from kuberank_operator.cluster.kubeapi import ApiError
from kuberank_operator.cluster.scraping import PodTarget, new_session, scrape_pods
from kuberank_operator.model.calibrations import pod_settings
from kuberank_operator.model.indexes import World
from kuberank_operator.model.observations import scraped_pods
from kuberank_operator.model.resources import Key
from kuberank_operator.model.signals import INFERENCE_METRICS_PORT, SIDECAR_METRICS_PORT
from kuberank_operator.telemetry import metrics

logger = logging.getLogger(__name__)


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
    inference_port: int = INFERENCE_METRICS_PORT
    sidecar_port: int = SIDECAR_METRICS_PORT
    # Where webhook alerts may act (--alert-webhook-namespaces within the watched namespaces).
    alert_scope: AlertScope = EVERY_NAMESPACE


class Autoscaler:
    """Runs the builtin evaluator for every RerankerDeployment and carries out decisions."""

    def __init__(
        self,
        *,
        actuator: Actuator,
        world: World,
        options: AutoscalerOptions,
        monitoring: MonitoringSync | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._monitoring = monitoring
        self._world = world
        self._options = options
        self._clock = clock
        self._states: dict[Key, ResourceState] = {}
        self._actions = Actions(actuator=actuator, clock=clock)
        self.alerts = AlertResponder(
            world=world,
            actions=self._actions,
            state=self._state,
            clock=clock,
            scope=options.alert_scope,
        )
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(options.concurrency)
        self._running: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the loop (evaluate() may also be called on its own: it opens the session)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="kuberank-autoscaler")

    def _scrape_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session(timeout_s=5.0)
        return self._session

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _state(self, key: Key) -> ResourceState:
        return self._states.setdefault(key, ResourceState())

    async def act(self, alert: AlertRequest) -> AlertOutcome:
        """Carry out one firing alert (the webhook's AlertActions): alerts.py decides."""
        return await self.alerts.act(alert)

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

    # --- the builtin evaluation ----------------------------------------------------------

    async def evaluate(self, key: Key, *, at: float | None = None) -> float:
        """Scrape, decide and act for one resource; returns seconds until the next time.

        `at` is the evaluation's scheduled time: `for` durations and rates are judged on that
        steady clock, so a slow scrape cannot make a held threshold miss its evaluation.
        """
        resource = target(self._world.rrd(key))
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
                    owner=resource.owner, spec=resource.spec, policies=resource.policies
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
        scrapes = await scrape_pods(
            self._scrape_session(),
            targets,
            taken_at=tick,
            inference_port=self._options.inference_port,
            sidecar_port=self._options.sidecar_port,
        )
        async with state.lock:
            now = tick
            self._actions.sync_from_status(state, resource)
            policies = resource.policies
            keep = max(policies.oom.window_s, 4 * interval) + 2 * interval
            state.evaluator.record(scrapes, keep_s=keep, now=now)
            evaluation = state.evaluator.evaluate(
                pods=pods,
                scale_policy=policies.scale,
                oom_policy=policies.oom,
                replicas=resource.spec.replicas,
                max_unavailable=policies.max_unavailable,
                restart_times=state.restart_times,
                vram_margin=resource.spec.gpu.vram_safety_margin,
                interval_s=interval,
                now=now,
                token_budget=resource.spec.batching.max_batch_tokens,
            )
            self._log_signals(resource, evaluation)
            await self._actions.report_token_budget(
                resource, state, evaluation.reduced_token_budget
            )
            await self._actions.report_calibration(
                resource,
                state,
                pod_settings(scrapes, known=state.pod_settings, pods=(p.name for p in pods)),
            )
            if evaluation.scale is not None:
                await self._actions.scale(resource, evaluation.scale, source=Source.BUILTIN)
            await self._actions.restarts(
                resource, state, evaluation.restarts, source=Source.BUILTIN
            )
        metrics.EVALUATIONS.observe(self._clock() - started)
        return interval

    @staticmethod
    def _log_signals(resource: Target, evaluation: Evaluation) -> None:
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
