"""Replica decisions from fleet signals: thresholds held for a while, cooldowns, hysteresis.

`plan_scale` is pure: it takes the signals of one evaluation, the current replica count and what
it remembered from the last evaluation, and returns a decision (or none) and the new memory.

- A threshold must hold on every evaluation for its `forSeconds`; one sample back under the
  threshold restarts the clock, so noisy input does not make noisy decisions.
- Scale-down needs every pod to report (missing metrics never scale down), GPU utilization
  below `scaleDown.gpuUtilization` (which must sit below the scale-up threshold: hysteresis),
  an empty queue, and `cooldownSeconds` since the last change. It removes one pod at a time.
- Scale-up waits `cooldownSeconds` after a previous scale-up (new pods need time to take load),
  but not after a scale-down: under load, waiting costs requests.
- The result is always inside [minReplicas, maxReplicas]; a count outside is clamped at once.
- `scaleUp.queueTokens` (tokens waiting per pod) is a threshold like the others when above 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from kuberank_operator.model.policies import ScalePolicy
from kuberank_operator.model.signals import FleetSignals

Direction = Literal["up", "down"]

# How far one scale-up may go: at most double the replicas in one step, as the HPA does.
MAX_SCALE_UP_FACTOR = 2


@dataclass(frozen=True)
class ScaleMemory:
    """What plan_scale carries from one evaluation to the next (times in seconds, wall clock)."""

    up_since: float | None = None
    down_since: float | None = None
    last_scale_at: float | None = None
    last_direction: Direction | None = None


@dataclass(frozen=True)
class ScaleDecision:
    """Change the replica count from `from_replicas` to `to_replicas`, and why."""

    from_replicas: int
    to_replicas: int
    reason: str

    @property
    def direction(self) -> Direction:
        return "up" if self.to_replicas > self.from_replicas else "down"


def _shown(value: float, digits: int) -> str:
    """`digits` significant digits, but whole numbers of tokens never as 1.229e+04."""
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"


def scale_up_breaches(policy: ScalePolicy, signals: FleetSignals) -> list[tuple[str, float]]:
    """Each scale-up threshold crossed now, as (description, observed / threshold)."""
    breaches: list[tuple[str, float]] = []
    checks: list[tuple[str, float | None, float, str]] = [
        ("queue depth", signals.mean_queue_depth, policy.up_queue_depth, ""),
        ("p99 latency", signals.p99_latency_ms, policy.up_p99_latency_ms, " ms"),
        ("GPU utilization", signals.mean_gpu_utilization, policy.up_gpu_utilization, " %"),
    ]
    if policy.up_queue_tokens > 0:  # 0: off
        checks.append(("queued tokens", signals.mean_queue_tokens, policy.up_queue_tokens, ""))
    for name, observed, threshold, unit in checks:
        if observed is None or observed <= threshold:
            continue
        ratio = observed / threshold if threshold > 0 else float(MAX_SCALE_UP_FACTOR)
        text = f"{name} {_shown(observed, 4)}{unit} > {_shown(threshold, 6)}{unit}"
        breaches.append((text, ratio))
    return breaches


def idle_now(policy: ScalePolicy, signals: FleetSignals) -> str | None:
    """Why the fleet counts as idle now, or None; never idle on incomplete data."""
    if not signals.complete:
        return None
    util = signals.mean_gpu_utilization
    queue = signals.mean_queue_depth
    if util is None or queue is None or util >= policy.down_gpu_utilization or queue > 0:
        return None
    return f"GPU utilization {util:.4g} % < {policy.down_gpu_utilization:g} % and queue empty"


def _cooled_down(policy: ScalePolicy, memory: ScaleMemory, *, now: float, direction: str) -> bool:
    if memory.last_scale_at is None:
        return True
    if direction == "up" and memory.last_direction == "down":
        return True
    return now - memory.last_scale_at >= policy.cooldown_s


def plan_scale(
    *,
    policy: ScalePolicy,
    signals: FleetSignals,
    replicas: int,
    memory: ScaleMemory,
    now: float,
) -> tuple[ScaleDecision | None, ScaleMemory]:
    """Decide one evaluation; see the module docstring for the rules."""
    if not policy.scales:
        return None, dataclasses.replace(memory, up_since=None, down_since=None)
    if replicas < policy.min_replicas or replicas > policy.max_replicas:
        target = min(max(replicas, policy.min_replicas), policy.max_replicas)
        decision = ScaleDecision(
            from_replicas=replicas,
            to_replicas=target,
            reason=f"replicas {replicas} outside [{policy.min_replicas}, {policy.max_replicas}]",
        )
        return decision, _after(memory, decision, now=now)

    breaches = scale_up_breaches(policy, signals)
    idle = None if breaches else idle_now(policy, signals)
    up_since = (memory.up_since if memory.up_since is not None else now) if breaches else None
    down_since = (memory.down_since if memory.down_since is not None else now) if idle else None
    memory = dataclasses.replace(memory, up_since=up_since, down_since=down_since)

    if (
        up_since is not None
        and now - up_since >= policy.up_for_s
        and replicas < policy.max_replicas
        and _cooled_down(policy, memory, now=now, direction="up")
    ):
        factor = max(ratio for _, ratio in breaches)
        wanted = max(replicas + 1, math.ceil(replicas * factor))
        target = min(wanted, replicas * MAX_SCALE_UP_FACTOR, policy.max_replicas)
        target = max(target, replicas + 1)
        reasons = "; ".join(text for text, _ in breaches)
        decision = ScaleDecision(
            from_replicas=replicas,
            to_replicas=min(target, policy.max_replicas),
            reason=f"{reasons} for {policy.up_for_s:g}s",
        )
        return decision, _after(memory, decision, now=now)

    if (
        idle is not None
        and down_since is not None
        and now - down_since >= policy.down_for_s
        and replicas > policy.min_replicas
        and _cooled_down(policy, memory, now=now, direction="down")
    ):
        decision = ScaleDecision(
            from_replicas=replicas,
            to_replicas=replicas - 1,
            reason=f"{idle} for {policy.down_for_s:g}s",
        )
        return decision, _after(memory, decision, now=now)
    return None, memory


def _after(memory: ScaleMemory, decision: ScaleDecision, *, now: float) -> ScaleMemory:
    # A change restarts both clocks: the next decision must see the new fleet hold a threshold.
    return ScaleMemory(
        up_since=None, down_since=None, last_scale_at=now, last_direction=decision.direction
    )


def step_for_alert(
    *,
    policy: ScalePolicy,
    direction: Direction,
    replicas: int,
    memory: ScaleMemory,
    now: float,
    reason: str,
) -> ScaleDecision | None:
    """The change an Alertmanager alert asks for, under the same bounds and cooldowns.

    Prometheus already held the threshold for its `for`; a repeated notification inside the
    cooldown changes nothing, which makes the webhook idempotent.
    """
    if not policy.scales or not _cooled_down(policy, memory, now=now, direction=direction):
        return None
    target = replicas + 1 if direction == "up" else replicas - 1
    target = min(max(target, policy.min_replicas), policy.max_replicas)
    if target == replicas:
        return None
    return ScaleDecision(from_replicas=replicas, to_replicas=target, reason=reason)
