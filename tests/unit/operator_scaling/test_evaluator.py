"""The evaluator's memory across evaluations: rates, `for` clocks, stuck pods, forgetting."""

from __future__ import annotations

import dataclasses
import math

from kuberank_operator.autoscaling.evaluator import DeploymentEvaluator, Evaluation
from kuberank_operator.model.observations import ContainerProblem, PodSummary, scraped_pods
from kuberank_operator.model.policies import OomPolicy, ScalePolicy
from kuberank_operator.model.signals import GpuReading, InferenceReading, PodScrape

SCALE = ScalePolicy(
    mode="builtin",
    min_replicas=1,
    max_replicas=3,
    cooldown_s=30,
    up_queue_depth=10,
    up_p99_latency_ms=1000,
    up_gpu_utilization=90,
    up_for_s=10,
    down_gpu_utilization=20,
    down_for_s=20,
)
OOM = OomPolicy(max_events=2, window_s=60, max_restarts_per_hour=1, stuck_s=10)


def summary(name: str, *, ready: bool = True, oom_killed_at: float | None = None) -> PodSummary:
    problems: tuple[ContainerProblem, ...] = ()
    if oom_killed_at is not None:
        problems = (
            ContainerProblem(
                reason="OOMKilled", container="inference", message="", at=oom_killed_at
            ),
        )
    return PodSummary(
        namespace="ns",
        name=name,
        owner="rrd",
        node_name="n",
        phase="Running",
        ready=ready,
        deleting=False,
        gpu_requests=(("nvidia.com/gpu", 1),),
        problems=problems,
        ip="127.0.0.1",
    )


def scrape(
    pod: str,
    at: float,
    *,
    queue: float = 0,
    util: float | None = 50,
    oom: float = 0,
    xid: int | None = None,
    ready: bool = True,
    pairs: float = 0,
) -> PodScrape:
    return PodScrape(
        pod=pod,
        taken_at=at,
        inference=InferenceReading(
            queue_depth=queue,
            pairs_in_flight=0,
            ready=ready,
            latency_buckets=((0.1, 0), (math.inf, 0)),
            cuda_oom_total=oom,
            pairs_total=pairs,
            token_budget=None,
        ),
        gpu=GpuReading(utilization_percent=util, fb_used_mib=1, fb_free_mib=9, last_xid=xid),
    )


def step(
    evaluator: DeploymentEvaluator,
    pods: list[PodSummary],
    scrapes: list[PodScrape],
    *,
    now: float,
    replicas: int,
    restart_times: list[float] | None = None,
) -> Evaluation:
    evaluator.record(scrapes, keep_s=120, now=now)
    return evaluator.evaluate(
        pods=pods,
        scale_policy=SCALE,
        oom_policy=OOM,
        replicas=replicas,
        max_unavailable=1,
        restart_times=restart_times or [],
        vram_margin=0.1,
        interval_s=5,
        now=now,
    )


def test_backlog_held_across_evaluations_scales_up_once() -> None:
    evaluator = DeploymentEvaluator()
    pods = [summary("a"), summary("b")]
    decisions = []
    for t in range(0, 40, 5):
        ev = step(
            evaluator,
            pods,
            [scrape("a", t, queue=30), scrape("b", t, queue=20)],
            now=t,
            replicas=2,
        )
        if ev.scale is not None:
            decisions.append((t, ev.scale.to_replicas, ev.scale.reason))
    assert len(decisions) == 1
    t, to, reason = decisions[0]
    assert (t, to) == (10, 3)
    assert "queue depth 25 > 10" in reason


def test_a_pod_that_stops_reporting_blocks_scale_down() -> None:
    evaluator = DeploymentEvaluator()
    pods = [summary("a"), summary("b")]
    for t in range(0, 100, 5):
        # b is in the pod list but its scrape failed every time: data incomplete.
        ev = step(evaluator, pods, [scrape("a", t, util=1)], now=t, replicas=2)
        assert ev.scale is None
        assert not ev.signals.complete


def test_repeated_cuda_ooms_restart_the_pod_and_the_replacement_starts_fresh() -> None:
    evaluator = DeploymentEvaluator()
    pods = [summary("a"), summary("b")]
    assert (
        step(evaluator, pods, [scrape("a", 0), scrape("b", 0)], now=0, replicas=2).restarts.restarts
        == ()
    )
    ev = step(evaluator, pods, [scrape("a", 5, oom=2), scrape("b", 5)], now=5, replicas=2)
    assert [d.pod for d in ev.restarts.restarts] == ["a"]
    evaluator.forget_pod("a")
    pods = [summary("c"), summary("b")]
    ev = step(evaluator, pods, [scrape("c", 10), scrape("b", 10)], now=10, replicas=2)
    assert ev.restarts.restarts == ()


def test_the_hourly_limit_is_passed_in_from_outside() -> None:
    evaluator = DeploymentEvaluator()
    pods = [summary("a")]
    step(evaluator, pods, [scrape("a", 0)], now=0, replicas=1)
    ev = step(evaluator, pods, [scrape("a", 5, oom=3)], now=5, replicas=1, restart_times=[1.0])
    assert ev.restarts.restarts == ()
    assert "rate limit" in ev.restarts.held_back[0][1]


def test_oomkilled_pods_are_restarted() -> None:
    evaluator = DeploymentEvaluator()
    pods = [summary("a", ready=False, oom_killed_at=95)]
    ev = step(evaluator, pods, [scrape("a", 100, ready=False)], now=100, replicas=1)
    assert [(d.pod, d.kind) for d in ev.restarts.restarts] == [("a", "oom-killed")]


def test_stuck_after_xid_counts_from_the_first_stuck_evaluation() -> None:
    evaluator = DeploymentEvaluator()
    pods = [summary("a", ready=False)]
    kinds = []
    for t in range(0, 25, 5):
        ev = step(evaluator, pods, [scrape("a", t, xid=79, ready=False)], now=t, replicas=1)
        kinds.append([d.kind for d in ev.restarts.restarts])
    # Stuck since t=0, stuckSeconds 10: wanted from t=10 on.
    assert kinds == [[], [], ["xid"], ["xid"], ["xid"]]
    # Queue moving again (pairs finished) clears it even with the XID still reported.
    ev = step(
        evaluator, [summary("a")], [scrape("a", 30, xid=79, queue=5, pairs=10)], now=30, replicas=1
    )
    ev = step(
        evaluator, [summary("a")], [scrape("a", 35, xid=79, queue=5, pairs=20)], now=35, replicas=1
    )
    assert ev.restarts.restarts == ()


def test_status_last_scale_is_adopted_for_the_cooldown() -> None:
    evaluator = DeploymentEvaluator()
    evaluator.adopt_last_scale(at=100, direction="up")
    assert evaluator.memory.last_scale_at == 100
    evaluator.adopt_last_scale(at=50, direction="down")
    assert evaluator.memory.last_direction == "up"


def test_scraped_pods_skips_pods_without_ip_or_going_away() -> None:
    base = summary("a")
    pending = PodSummary(**{**base.__dict__, "name": "p", "phase": "Pending", "ip": ""})
    leaving = PodSummary(**{**base.__dict__, "name": "l", "deleting": True})
    assert [p.name for p in scraped_pods([base, pending, leaving])] == ["a"]


def test_queued_tokens_held_across_evaluations_scale_up_where_the_threshold_is_set() -> None:
    policy = dataclasses.replace(SCALE, up_queue_tokens=8192)
    evaluator = DeploymentEvaluator()
    pods = [summary("a"), summary("b")]
    decisions = []
    for t in range(0, 40, 5):
        # few pairs (under queueDepth 10) but long ones: 12,288 tokens per pod on average
        scrapes = [
            dataclasses.replace(s, inference=dataclasses.replace(s.inference, queue_tokens=q))
            for s, q in ((scrape("a", t, queue=4), 16384.0), (scrape("b", t, queue=2), 8192.0))
            if s.inference is not None
        ]
        evaluator.record(scrapes, keep_s=120, now=t)
        ev = evaluator.evaluate(
            pods=pods,
            scale_policy=policy,
            oom_policy=OOM,
            replicas=2,
            max_unavailable=1,
            restart_times=[],
            vram_margin=0.1,
            interval_s=5,
            now=t,
        )
        assert ev.signals.mean_queue_tokens == 12288
        if ev.scale is not None:
            decisions.append((t, ev.scale.to_replicas, ev.scale.reason))
    assert len(decisions) == 1
    t, to, reason = decisions[0]
    assert (t, to) == (10, 3)
    assert "queued tokens 12288 > 8192" in reason
