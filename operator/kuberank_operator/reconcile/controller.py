"""The reconcile loop: a work queue of RerankerDeployment keys and the workers that drain it.

kopf watches and indexes; its event handlers only add keys here. A worker takes a key, reads
the resource's parsed view and everything related from the indexes, renders what should exist,
applies what differs through the actuator (server-side apply), computes the status, applies it as
the reconciler's field manager and posts an Event for each action. Level-triggered and safe to
repeat: an operator killed at any point converges when started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kuberank_operator.cluster.actuator import Actuator
from kuberank_operator.cluster.outcomes import Refused
from kuberank_operator.model import admission
from kuberank_operator.model.indexes import World
from kuberank_operator.model.naming import Owner, StatusWriter
from kuberank_operator.model.resources import Key
from kuberank_operator.model.signals import PodTuning
from kuberank_operator.model.specs import RerankerSpec
from kuberank_operator.reconcile import planning, statuses
from kuberank_operator.reconcile.capacity import count_capacity, cpu_capacity
from kuberank_operator.reconcile.workqueue import QueueClosedError, WorkQueue
from kuberank_operator.rendering.children import RenderOptions, render_children
from kuberank_operator.telemetry import metrics

logger = logging.getLogger(__name__)

# Capacity changes (a pod bound, a node added) re-check capacity-limited resources at most
# this often, however many pods change.
CAPACITY_DEBOUNCE_SECONDS = 1.0


@dataclass(frozen=True)
class ControllerOptions:
    # From the command line (settings.OperatorConfig holds the defaults).
    workers: int
    resync_seconds: float
    render: RenderOptions = field(default_factory=RenderOptions)


@dataclass
class _Memory:
    """Per resource, what this process did: survives between reconciles, not restarts."""

    applied: dict[str, planning.Remembered] = field(default_factory=dict)
    next_resync: float = 0.0
    failures: int = 0


async def _builtin_admission() -> admission.AdmissionPolicy:
    return admission.AdmissionPolicy()


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Controller:
    def __init__(
        self,
        *,
        actuator: Actuator,
        world: World,
        options: ControllerOptions,
        clock: Callable[[], float] = time.monotonic,
        tuning_states: Callable[[Key], Mapping[str, PodTuning] | None] = lambda key: None,
        admission: Callable[[], Awaitable[admission.AdmissionPolicy]] | None = None,
    ) -> None:
        self._actuator = actuator
        self._world = world
        self._options = options
        self._clock = clock
        # Per pod, the GPU tuning its sidecar reports (tuningwatch.TuningWatch.states).
        self._tuning_states = tuning_states
        # The admin's rules, re-checked before anything is rendered (None: the built-in rules).
        self._admission = admission or _builtin_admission
        self.queue: WorkQueue[Key] = WorkQueue(clock=clock)
        self._memory: dict[Key, _Memory] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._capacity_pending = False

    # --- what kopf's handlers call -------------------------------------------------------

    def enqueue(self, key: Key) -> None:
        self.queue.add(key)

    def forget(self, key: Key) -> None:
        """The resource is gone; its children go by garbage collection (ownerReferences)."""
        self.queue.forget(key)
        self._memory.pop(key, None)

    def capacity_changed(self) -> None:
        """Devices were taken or freed: capacity-limited resources should look again, soon."""
        if self._capacity_pending:
            return
        self._capacity_pending = True
        asyncio.get_running_loop().call_later(CAPACITY_DEBOUNCE_SECONDS, self._recheck_capacity)

    def _recheck_capacity(self) -> None:
        self._capacity_pending = False
        for key in self._world.rrd_keys():
            view = self._world.rrd(key)
            if view is None:
                continue
            conditions = view.status.get("conditions") or []
            if any(
                c.get("type") == statuses.CAPACITY_LIMITED and c.get("status") == "True"
                for c in conditions
            ):
                self.queue.add(key)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (again, after pause) and take a fresh look at every resource."""
        if self._tasks:
            return
        for i in range(self._options.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"reconcile-worker-{i}"))
        for key in self._world.rrd_keys():
            self.queue.add(key)

    async def pause(self) -> None:
        """Stop working but keep the queue: a standby replica keeps collecting keys."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def stop(self) -> None:
        self.queue.close()
        await self.pause()

    @property
    def alive(self) -> bool:
        """No worker has died (a paused controller, with none, is alive)."""
        return not any(t.done() for t in self._tasks)

    async def _work(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueClosedError:
                return
            started = time.perf_counter()
            result = "ok"
            try:
                delay = await self.reconcile(key)
                if delay is None:
                    result = "gone"
                else:
                    self.queue.add_after(key, delay)
            except Exception:
                # A bug must not kill the worker: log it, retry the key later with backoff.
                result = "error"
                memory = self._memory.setdefault(key, _Memory())
                memory.failures += 1
                logger.exception("reconcile of %s/%s failed", *key)
                self.queue.add_after(
                    key,
                    planning.requeue_after(
                        state="",
                        failures=memory.failures,
                        resync_seconds=self._options.resync_seconds,
                    ),
                )
            finally:
                self.queue.done(key)
                metrics.RECONCILES.labels(result=result).inc()
                metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    # --- one reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        """Bring one resource's objects and status in line; seconds until the next look."""
        view = self._world.rrd(key)
        if view is None or view.deleting:
            self.forget(key)
            return None
        owner = view.owner
        memory = self._memory.get(key)
        if memory is None:
            # The first full re-apply comes a resync period after first sight, spread out so
            # that a restart with many resources does not re-apply them all at once.
            spread = self._options.resync_seconds * (0.5 + random.random() / 2)
            memory = self._memory[key] = _Memory(next_resync=self._clock() + spread)
        previous_status = view.status
        spec = view.spec
        if spec is None:
            await self._report_refusal(
                owner, previous_status, reason="InvalidSpec", message=view.spec_error or ""
            )
            return None
        refusals = admission.check(
            view.spec_body, namespace=owner.namespace, policy=await self._admission()
        )
        if refusals:
            # Nothing is rendered (an existing Deployment is left as it is); look again at the
            # resync, when the admin's rules may have changed.
            message = "; ".join(r.message for r in refusals)
            await self._report_refusal(
                owner, previous_status, reason="AdmissionRefused", message=message
            )
            return self._options.resync_seconds

        now = self._clock()
        resync = now >= memory.next_resync
        apply_error = await self._apply_children(owner, spec, memory, now=now, resync=resync)
        if resync and apply_error is None:
            memory.next_resync = now + self._options.resync_seconds

        status = self._compute_status(owner, spec, apply_error)
        await self._write_status(owner, status, previous_status)
        memory.failures = memory.failures + 1 if apply_error else 0
        return planning.requeue_after(
            state=status.state,
            failures=memory.failures,
            resync_seconds=self._options.resync_seconds,
        )

    async def _apply_children(
        self, owner: Owner, spec: RerankerSpec, memory: _Memory, *, now: float, resync: bool
    ) -> str | None:
        desired = render_children(owner, spec, options=self._options.render)
        observed = self._world.children(owner.key)
        plan = planning.plan_applies(
            desired, observed=observed, remembered=memory.applied, now=now, resync=resync
        )
        errors = []
        for planned in plan:
            applied = await self._actuator.apply(planned.obj)
            if isinstance(applied, Refused):
                metrics.APPLIES.labels(kind=planned.kind, result="error").inc()
                message = f"could not apply {planned.kind} {planned.name}: {applied.message}"
                errors.append(message)
                logger.warning("%s/%s: %s", owner.namespace, owner.name, message)
                await self._event(owner, "Warning", "ApplyFailed", message, action="Apply")
                continue
            metrics.APPLIES.labels(kind=planned.kind, result="ok").inc()
            previous = memory.applied.get(planned.kind)
            memory.applied[planned.kind] = planning.Remembered(digest=planned.digest, at=now)
            seen = observed.get(planned.kind)
            # A re-apply of what this process already applied is not news.
            if previous is not None and previous.digest == planned.digest and not applied.created:
                continue
            event = planning.apply_event(
                planned,
                created=applied.created,
                previous_replicas=seen.spec_replicas if seen is not None else None,
            )
            if event is not None:
                logger.info("%s/%s: %s", owner.namespace, owner.name, event[1])
                await self._event(owner, "Normal", event[0], event[1], action="Apply")
        return "; ".join(errors) or None

    def _compute_status(
        self, owner: Owner, spec: RerankerSpec, apply_error: str | None
    ) -> statuses.StatusView:
        children = self._world.children(owner.key)
        accelerator = self._options.render.accelerator
        capacity = (
            count_capacity(
                resource_name=spec.gpu.resource_name,
                needed=spec.replicas,
                owner=owner.key,
                node_selector=spec.node_selector,
                tolerations=spec.tolerations,
                affinity=spec.affinity,
                nodes=self._world.nodes(),
                pods=self._world.gpu_pods(),
            )
            if accelerator == "nvidia"
            else cpu_capacity()
        )
        return statuses.compute_status(
            statuses.Observed(
                name=owner.name,
                generation=owner.generation,
                spec=spec,
                deployment=children.get("Deployment"),
                pods=self._world.pods(owner.key),
                capacity=capacity,
                apply_error=apply_error,
                tuning_states=self._tuning_states(owner.key),
                accelerator=accelerator,
            )
        )

    async def _write_status(
        self, owner: Owner, view: statuses.StatusView, previous: Mapping[str, Any]
    ) -> None:
        patch = statuses.status_patch(view, previous=previous, now=_utc_now())
        if not statuses.status_changed(patch, previous):
            return
        written = await self._actuator.write_status(
            owner=owner, writer=StatusWriter.RECONCILER, fields=patch
        )
        if isinstance(written, Refused):
            return
        changes = statuses.transitions(patch, previous)
        for event_type, reason, message in planning.transition_events(
            changes, had_status=bool(previous.get("conditions"))
        ):
            await self._event(owner, event_type, reason, message, action="UpdateStatus")

    async def _report_refusal(
        self, owner: Owner, previous: Mapping[str, Any], *, reason: str, message: str
    ) -> None:
        """Ready False and Degraded True with `reason`, and one Event, for a spec not rendered:
        unusable (InvalidSpec) or refused by the admin's rules (AdmissionRefused)."""
        already = any(
            c.get("type") == statuses.DEGRADED
            and c.get("reason") == reason
            and c.get("message") == message
            for c in previous.get("conditions") or []
        )
        if already:
            return
        now = _utc_now()
        conditions = [
            {
                "type": statuses.READY,
                "status": "False",
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
                "observedGeneration": owner.generation,
            },
            {
                "type": statuses.DEGRADED,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
                "observedGeneration": owner.generation,
            },
        ]
        # The reconciler applies every field it owns: the counts it wrote last stay as they were.
        kept = {k: previous[k] for k in statuses.COUNTED_FIELDS if k in previous}
        await self._actuator.write_status(
            owner=owner,
            writer=StatusWriter.RECONCILER,
            fields={
                **kept,
                "observedGeneration": owner.generation,
                "state": "Degraded",
                "reason": reason,
                "conditions": conditions,
            },
        )
        await self._event(owner, "Warning", reason, message, action="Validate")

    async def _event(
        self, owner: Owner, type_: str, reason: str, message: str, *, action: str
    ) -> None:
        metrics.EVENTS.labels(type=type_, reason=reason).inc()
        await self._actuator.post_event(
            owner=owner, type_=type_, reason=reason, message=message, action=action
        )
