"""What the builtin evaluator remembers about one RerankerDeployment, and what it decides.

Between evaluations it keeps each pod's recent scrapes (for rates), since when a pod has been
stuck after a critical XID, and the scale memory (`for` clocks, last change). `evaluate` turns
that, the pods the operator sees and the policies into an `Evaluation`. No I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kuberank_operator.autoscaling.oomrestarts import (
    PodHealth,
    RestartPlan,
    plan_restarts,
    reduced_token_budget,
    restarts_in_last_hour,
    update_stuck_since,
)
from kuberank_operator.autoscaling.scaling import ScaleDecision, ScaleMemory, plan_scale
from kuberank_operator.model.observations import PodSummary
from kuberank_operator.model.policies import OomPolicy, ScalePolicy
from kuberank_operator.model.signals import (
    FleetSignals,
    PodScrape,
    PodSignals,
    fleet_signals,
    pod_signals,
)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation's signals and decisions."""

    signals: FleetSignals
    scale: ScaleDecision | None
    restarts: RestartPlan
    # Lowest token budget a pod lowered itself to after CUDA OOMs; 0: none lowered.
    reduced_token_budget: int = 0


def latency_window(interval_s: float) -> float:
    """p99 over the last four evaluations: enough scrapes for a rate, short enough to react."""
    return 4 * interval_s


def _oom_killed_at(pod: PodSummary) -> float | None:
    times = [p.at for p in pod.problems if p.reason == "OOMKilled" and p.at is not None]
    return max(times) if times else None


def _progressed(history: Sequence[PodScrape]) -> bool | None:
    """Whether the pod finished pairs between its last two scrapes; None when unknown."""
    if len(history) < 2:
        return None
    before, after = history[-2].inference, history[-1].inference
    if before is None or after is None or before.pairs_total is None:
        return None
    if after.pairs_total is None:
        return None
    return after.pairs_total > before.pairs_total


class DeploymentEvaluator:
    """The builtin evaluator's memory of one RerankerDeployment."""

    def __init__(self) -> None:
        self._history: dict[str, list[PodScrape]] = {}
        self._stuck_since: dict[str, float] = {}
        self.memory = ScaleMemory()

    def record(self, scrapes: Sequence[PodScrape], *, keep_s: float, now: float) -> None:
        """Add this round's scrapes; forget pods that are gone and scrapes older than keep_s."""
        seen = {s.pod for s in scrapes}
        for gone in set(self._history) - seen:
            del self._history[gone]
            self._stuck_since.pop(gone, None)
        for scrape in scrapes:
            history = self._history.setdefault(scrape.pod, [])
            history.append(scrape)
            # Keep one scrape older than the window, so a rate always spans all of it.
            while len(history) > 2 and history[1].taken_at < now - keep_s:
                history.pop(0)

    def pod_signals(self, *, now: float, window_s: float, vram_margin: float) -> list[PodSignals]:
        return [
            pod_signals(history, now=now, window_s=window_s, vram_safety_margin=vram_margin)
            for history in self._history.values()
            if history
        ]

    def adopt_last_scale(self, *, at: float | None, direction: str | None) -> None:
        """Take a change recorded in status (another path, an earlier process) into account."""
        if at is None or (
            self.memory.last_scale_at is not None and at <= self.memory.last_scale_at
        ):
            return
        self.memory = dataclasses.replace(
            self.memory,
            last_scale_at=at,
            last_direction="up" if direction == "up" else "down" if direction == "down" else None,
        )

    def evaluate(
        self,
        *,
        pods: Sequence[PodSummary],
        scale_policy: ScalePolicy,
        oom_policy: OomPolicy,
        replicas: int,
        max_unavailable: int,
        restart_times: Iterable[float],
        vram_margin: float,
        interval_s: float,
        now: float,
        token_budget: int = 0,
    ) -> Evaluation:
        live = [p for p in pods if not p.deleting]
        window = latency_window(interval_s)
        by_pod = {
            s.pod: s for s in self.pod_signals(now=now, window_s=window, vram_margin=vram_margin)
        }
        oom_by_pod = {
            s.pod: s
            for s in self.pod_signals(
                now=now, window_s=oom_policy.window_s, vram_margin=vram_margin
            )
        }
        reporting = [by_pod[p.name] for p in live if p.name in by_pod]
        signals = fleet_signals(reporting, pods_expected=max(replicas, len(live)))
        decision, self.memory = plan_scale(
            policy=scale_policy, signals=signals, replicas=replicas, memory=self.memory, now=now
        )
        health: list[PodHealth] = []
        for pod in pods:
            current = by_pod.get(pod.name)
            history = self._history.get(pod.name) or []
            progressed = _progressed(history)
            stuck = update_stuck_since(
                self._stuck_since.get(pod.name),
                last_xid=current.last_xid if current else None,
                ready=current.ready if current else None,
                queue_depth=current.queue_depth if current else None,
                progressed=progressed,
                now=now,
            )
            if stuck is None:
                self._stuck_since.pop(pod.name, None)
            else:
                self._stuck_since[pod.name] = stuck
            oom = oom_by_pod.get(pod.name)
            health.append(
                PodHealth(
                    name=pod.name,
                    ready=pod.ready,
                    terminating=pod.deleting,
                    cuda_ooms_in_window=oom.cuda_ooms_in_window if oom else None,
                    oom_killed_at=_oom_killed_at(pod),
                    stuck_since=stuck,
                    stuck_xid=current.last_xid if current and stuck is not None else None,
                )
            )
        restarts = plan_restarts(
            policy=oom_policy,
            pods=health,
            replicas=replicas,
            max_unavailable=max_unavailable,
            restart_times=restarts_in_last_hour(restart_times, now=now),
            now=now,
        )
        return Evaluation(
            signals=signals,
            scale=decision,
            restarts=restarts,
            reduced_token_budget=reduced_token_budget(
                ((s.token_budget, s.token_budget_ceiling) for s in reporting),
                configured=token_budget,
            ),
        )

    def forget_pod(self, name: str) -> None:
        """A restarted pod: its scrapes must not count against its replacement."""
        self._history.pop(name, None)
        self._stuck_since.pop(name, None)
