"""Which inference pods to restart after out-of-memory events or a GPU that stopped working.

A pod is restarted (deleted; its Deployment replaces it) when
- its CUDA out-of-memory count reached `spec.oom.maxEvents` within `spec.oom.windowSeconds`,
- a container of it was OOMKilled by the kubelet within that window, or
- it has been stuck for `stuckSeconds` after a critical XID on its GPU (not ready, or work
  queued with no pair finished).
At most `maxRestartsPerHour` restarts per RerankerDeployment, and never more pods unavailable
than the disruption budget allows. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from kuberank_operator.model.policies import CRITICAL_XIDS, OomPolicy

RestartKind = Literal["xid", "oom-killed", "cuda-oom"]

HOUR_S = 3600.0

_SEVERITY: dict[RestartKind, int] = {"xid": 0, "oom-killed": 1, "cuda-oom": 2}


@dataclass(frozen=True)
class PodHealth:
    """What the operator knows about one pod when it decides restarts."""

    name: str
    ready: bool
    terminating: bool
    cuda_ooms_in_window: float | None
    oom_killed_at: float | None
    stuck_since: float | None
    stuck_xid: int | None


@dataclass(frozen=True)
class RestartDecision:
    """Delete `pod` because of `reason` (Deployment pod names are never reused)."""

    pod: str
    kind: RestartKind
    reason: str


class HoldCause(StrEnum):
    """Why a wanted restart waits (the label of kuberank_operator_restarts_held_back_total)."""

    RATE_LIMIT = "rate-limit"  # spec.oom.maxRestartsPerHour
    BUDGET = "budget"  # the disruption budget


@dataclass(frozen=True)
class HeldBack:
    decision: RestartDecision
    cause: HoldCause
    why: str


@dataclass(frozen=True)
class RestartPlan:
    """Restarts to do now, and those wanted but held back, with why."""

    restarts: tuple[RestartDecision, ...]
    held: tuple[HeldBack, ...] = ()

    @property
    def held_back(self) -> tuple[tuple[RestartDecision, str], ...]:
        return tuple((h.decision, h.why) for h in self.held)


def update_stuck_since(
    previous: float | None,
    *,
    last_xid: int | None,
    ready: bool | None,
    queue_depth: float | None,
    progressed: bool | None,
    now: float,
) -> float | None:
    """Since when a pod has been stuck after a critical XID; None when it is not.

    Stuck means the GPU reported a critical XID and the server is not ready (or unreachable),
    or it has work queued and finished no pair since the last evaluation.
    """
    if last_xid is None or last_xid not in CRITICAL_XIDS:
        return None
    stalled = ready is not True or (bool(queue_depth) and progressed is False)
    if not stalled:
        return None
    return previous if previous is not None else now


def restart_candidates(
    *, policy: OomPolicy, pods: Iterable[PodHealth], now: float
) -> list[RestartDecision]:
    """Every pod that needs a restart now, most severe first."""
    wanted: list[RestartDecision] = []
    for pod in pods:
        if pod.terminating:
            continue
        if pod.stuck_since is not None and now - pod.stuck_since >= policy.stuck_s:
            wanted.append(
                RestartDecision(
                    pod=pod.name,
                    kind="xid",
                    reason=f"stuck {now - pod.stuck_since:.0f}s after critical XID {pod.stuck_xid}",
                )
            )
        elif pod.oom_killed_at is not None and now - pod.oom_killed_at <= policy.window_s:
            wanted.append(
                RestartDecision(pod=pod.name, kind="oom-killed", reason="container OOMKilled")
            )
        elif pod.cuda_ooms_in_window is not None and pod.cuda_ooms_in_window >= policy.max_events:
            wanted.append(
                RestartDecision(
                    pod=pod.name,
                    kind="cuda-oom",
                    reason=f"{pod.cuda_ooms_in_window:.0f} CUDA out-of-memory errors in "
                    f"{policy.window_s:g}s (limit {policy.max_events})",
                )
            )
    wanted.sort(key=lambda d: (_SEVERITY[d.kind], d.pod))
    return wanted


def restarts_in_last_hour(restart_times: Iterable[float], *, now: float) -> list[float]:
    """The restart times that still count against maxRestartsPerHour."""
    return sorted(t for t in restart_times if now - t < HOUR_S)


def plan_restarts(
    *,
    policy: OomPolicy,
    pods: Sequence[PodHealth],
    replicas: int,
    max_unavailable: int,
    restart_times: Iterable[float],
    now: float,
) -> RestartPlan:
    """Pick the restarts allowed now by the hourly limit and the disruption budget.

    Deleting a pod that is already unavailable does not reduce availability, so it needs no
    budget; it still counts against the hourly limit.
    """
    candidates = restart_candidates(policy=policy, pods=pods, now=now)
    used = len(restarts_in_last_hour(restart_times, now=now))
    ready_by_name = {p.name: p.ready for p in pods}
    unavailable = sum(1 for p in pods if not p.ready or p.terminating)
    unavailable += max(0, replicas - len(pods))
    restarts: list[RestartDecision] = []
    held: list[HeldBack] = []
    for decision in candidates:
        if used >= policy.max_restarts_per_hour:
            held.append(
                HeldBack(
                    decision,
                    HoldCause.RATE_LIMIT,
                    f"rate limit: {used} restarts in the last hour "
                    f"(spec.oom.maxRestartsPerHour={policy.max_restarts_per_hour})",
                )
            )
            continue
        costs_budget = ready_by_name.get(decision.pod, False)
        if costs_budget and unavailable >= max_unavailable:
            held.append(
                HeldBack(
                    decision,
                    HoldCause.BUDGET,
                    f"disruption budget: {unavailable} pod(s) unavailable, "
                    f"at most {max_unavailable} allowed",
                )
            )
            continue
        restarts.append(decision)
        used += 1
        if costs_budget:
            unavailable += 1
    return RestartPlan(restarts=tuple(restarts), held=tuple(held))


def reduced_token_budget(
    budgets: Iterable[tuple[float | None, float | None]], *, configured: int
) -> int:
    """The lowest token budget a pod runs with after CUDA OOMs (each inference server halves
    its own budget after one and doubles it back later), or 0 when every pod runs the budget it
    started with. Each pod gives (budget now, budget since start-up); a pod that reports no
    start-up budget is judged against the configured spec.batching.maxBatchTokens (0: the
    calibration chose it, so such a pod cannot be judged). Pods that report none are skipped."""
    seen = [
        int(budget)
        for budget, ceiling in budgets
        if budget is not None and 0 < budget < (ceiling or configured)
    ]
    return min(seen) if seen else 0
