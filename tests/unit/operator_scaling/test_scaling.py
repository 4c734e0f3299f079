"""plan_scale: thresholds held for a while, cooldowns, hysteresis, bounds."""

from __future__ import annotations

import dataclasses
import random

import pytest

from kuberank_operator.autoscaling.scaling import ScaleMemory, plan_scale, step_for_alert
from kuberank_operator.model.policies import PolicyError, ScalePolicy, scale_policy
from kuberank_operator.model.signals import FleetSignals
from kuberank_operator.model.specs import AutoscalingSpec, ScaleDownSpec, ScaleUpSpec

POLICY = ScalePolicy(
    mode="builtin",
    min_replicas=1,
    max_replicas=4,
    cooldown_s=60,
    up_queue_depth=100,
    up_p99_latency_ms=500,
    up_gpu_utilization=85,
    up_for_s=30,
    down_gpu_utilization=30,
    down_for_s=120,
)


def fleet(
    *,
    queue: float | None = 0,
    p99: float | None = None,
    util: float | None = 50,
    pods: int = 2,
    complete: bool = True,
) -> FleetSignals:
    return FleetSignals(
        pods_expected=pods,
        pods=(),
        mean_queue_depth=queue,
        p99_latency_ms=p99,
        mean_gpu_utilization=util,
        complete=complete,
    )


def run(
    samples: list[FleetSignals],
    *,
    replicas: int = 2,
    policy: ScalePolicy = POLICY,
    step: float = 5,
    memory: ScaleMemory | None = None,
    start: float = 1000,
) -> list[tuple[float, int]]:
    """Feed one sample per `step` seconds, applying decisions; returns (time, new replicas)."""
    memory = memory or ScaleMemory()
    changes: list[tuple[float, int]] = []
    for i, signals in enumerate(samples):
        now = start + i * step
        decision, memory = plan_scale(
            policy=policy, signals=signals, replicas=replicas, memory=memory, now=now
        )
        if decision is not None:
            assert decision.from_replicas == replicas
            replicas = decision.to_replicas
            changes.append((now - start, replicas))
    return changes


def test_scale_policy_from_the_typed_spec() -> None:
    spec = AutoscalingSpec(
        mode="builtin",
        min_replicas=2,
        max_replicas=6,
        cooldown_seconds=30,
        scale_up=ScaleUpSpec(
            queue_depth=64, p99_latency_ms=250, gpu_utilization=80, for_seconds=10
        ),
        scale_down=ScaleDownSpec(gpu_utilization=20, for_seconds=90),
    )
    policy = scale_policy(spec)
    assert (policy.min_replicas, policy.max_replicas, policy.cooldown_s) == (2, 6, 30)
    assert (policy.up_queue_depth, policy.up_for_s, policy.down_for_s) == (64, 10, 90)


def test_scale_policy_rejects_flapping_thresholds_naming_the_fields() -> None:
    spec = AutoscalingSpec(
        mode="builtin",
        scale_up=ScaleUpSpec(gpu_utilization=50),
        scale_down=ScaleDownSpec(gpu_utilization=50),
    )
    with pytest.raises(PolicyError, match=r"scaleDown\.gpuUtilization \(50\) must be below"):
        scale_policy(spec)


def test_queue_backlog_scales_up_only_after_for_seconds() -> None:
    changes = run([fleet(queue=150)] * 10)
    # First breach at t=0; held 30 s at t=30: one step, proportional (150/100 -> 3 of 2).
    assert changes == [(30, 3)]


def test_scale_up_is_proportional_but_at_most_doubles_and_stays_under_max() -> None:
    changes = run([fleet(queue=10_000)] * 8, replicas=1)
    assert changes == [(30, 2)]
    changes = run([fleet(queue=10_000)] * 8, replicas=3)
    assert changes == [(30, 4)]


def test_noisy_input_around_the_threshold_makes_no_decision() -> None:
    rng = random.Random(7)
    # Above the threshold most of the time, but never for 30 s in a row.
    samples = [fleet(util=90 if i % 5 else 70) for i in range(200)]
    assert run(samples) == []
    # Random noise straddling both thresholds changes nothing while no side holds for long.
    noisy: list[FleetSignals] = []
    run_length = 0
    for _ in range(400):
        util = rng.choice([20, 90])
        run_length = run_length + 1 if noisy and noisy[-1].mean_gpu_utilization == util else 1
        if run_length > 5:  # 6 samples = 25 s; the shortest `for` here is 30 s
            util, run_length = (90 if util == 20 else 20), 1
        noisy.append(fleet(util=util))
    assert run(noisy) == []


def test_latency_and_gpu_utilization_also_scale_up() -> None:
    assert run([fleet(p99=900)] * 8) == [(30, 4)]
    assert run([fleet(util=95)] * 8) == [(30, 3)]


def test_idle_scales_down_one_pod_per_cooldown() -> None:
    changes = run([fleet(util=5)] * 100, replicas=3)
    # Idle from t=0: first step at 120 s; the next idle period starts on the next sample.
    assert changes == [(120, 2), (245, 1)]


def test_missing_metrics_never_scale_down() -> None:
    assert run([fleet(util=None)] * 100, replicas=3) == []
    assert run([fleet(util=5, complete=False)] * 100, replicas=3) == []
    assert run([fleet(util=5, queue=None)] * 100, replicas=3) == []


def test_queued_work_blocks_scale_down() -> None:
    assert run([fleet(util=5, queue=3)] * 100, replicas=3) == []


def test_cooldown_after_scale_up_delays_the_next_scale_up() -> None:
    changes = run([fleet(queue=150)] * 40, replicas=1)
    # 1 -> 2 at 30 s; the next needs the 30 s hold *and* 60 s since the change.
    assert changes == [(30, 2), (90, 3), (150, 4)]


def test_scale_up_right_after_a_scale_down_is_not_delayed() -> None:
    memory = ScaleMemory(last_scale_at=1000, last_direction="down")
    changes = run([fleet(queue=150)] * 8, memory=memory, start=1000)
    assert changes == [(30, 3)]


def test_scale_down_waits_the_cooldown_after_any_change() -> None:
    memory = ScaleMemory(last_scale_at=1000, last_direction="up")
    policy = ScalePolicy(**{**POLICY.__dict__, "down_for_s": 10, "cooldown_s": 100})
    changes = run([fleet(util=5)] * 40, memory=memory, policy=policy, start=1000)
    assert changes[0] == (100, 1)


def test_bounds_are_enforced_at_once() -> None:
    assert run([fleet()], replicas=9) == [(0, 4)]
    assert run([fleet()], replicas=0) == [(0, 1)]
    assert run([fleet(queue=10_000)] * 20, replicas=4) == []
    assert run([fleet(util=1)] * 100, replicas=1) == []


@pytest.mark.parametrize("mode", ["external", "off"])
def test_other_modes_never_scale(mode: str) -> None:
    policy = ScalePolicy(**{**POLICY.__dict__, "mode": mode})
    assert run([fleet(queue=10_000)] * 20, policy=policy) == []
    assert run([fleet()], replicas=9, policy=policy) == []
    assert (
        step_for_alert(
            policy=policy,
            direction="up",
            replicas=2,
            memory=ScaleMemory(),
            now=0,
            reason="alert",
        )
        is None
    )


def test_alert_steps_respect_cooldown_so_repeats_change_nothing() -> None:
    first = step_for_alert(
        policy=POLICY, direction="up", replicas=2, memory=ScaleMemory(), now=0, reason="alert"
    )
    assert first is not None
    assert (first.from_replicas, first.to_replicas) == (2, 3)
    after = ScaleMemory(last_scale_at=0, last_direction="up")
    repeat = step_for_alert(
        policy=POLICY, direction="up", replicas=3, memory=after, now=10, reason="alert"
    )
    assert repeat is None
    later = step_for_alert(
        policy=POLICY, direction="up", replicas=3, memory=after, now=61, reason="alert"
    )
    assert later is not None
    assert later.to_replicas == 4
    at_min = step_for_alert(
        policy=POLICY, direction="down", replicas=1, memory=ScaleMemory(), now=0, reason="alert"
    )
    assert at_min is None


def tokens(value: float | None, *, queue: float = 0) -> FleetSignals:
    return FleetSignals(
        pods_expected=2,
        pods=(),
        mean_queue_depth=queue,
        p99_latency_ms=None,
        mean_gpu_utilization=50,
        complete=True,
        mean_queue_tokens=value,
    )


def scale_up_reason(policy: ScalePolicy, signals: FleetSignals) -> str:
    """The reason of the scale-up of 2 replicas after the threshold held 30 s."""
    decision, _ = plan_scale(
        policy=policy, signals=signals, replicas=2, memory=ScaleMemory(up_since=0), now=30
    )
    assert decision is not None
    return decision.reason


def test_queued_tokens_do_not_scale_while_the_threshold_is_off() -> None:
    assert POLICY.up_queue_tokens == 0
    assert run([tokens(1_000_000)] * 10) == []


def test_queued_tokens_over_the_threshold_scale_up_proportionally() -> None:
    policy = dataclasses.replace(POLICY, up_queue_tokens=4096)
    # Few pairs but long ones: the queue depth (10 < 100) alone would not scale.
    assert run([tokens(6144, queue=10)] * 10, policy=policy) == [(30, 3)]
    assert "queued tokens 6144 > 4096" in scale_up_reason(policy, tokens(6144))


def test_queued_tokens_unknown_or_under_the_threshold_do_not_scale() -> None:
    policy = dataclasses.replace(POLICY, up_queue_tokens=4096)
    assert run([tokens(None)] * 10, policy=policy) == []
    assert run([tokens(4096)] * 10, policy=policy) == []


def test_scale_policy_carries_the_queue_tokens_threshold() -> None:
    spec = AutoscalingSpec(mode="builtin", scale_up=ScaleUpSpec(queue_tokens=8192))
    assert scale_policy(spec).up_queue_tokens == 8192
    assert scale_policy(AutoscalingSpec()).up_queue_tokens == 0


def test_large_token_counts_are_written_in_full_in_the_reason() -> None:
    policy = dataclasses.replace(POLICY, up_queue_tokens=1_048_576)
    assert "queued tokens 2500000 > 1048576" in scale_up_reason(policy, tokens(2_500_000))
