"""Which pods get restarted, and what holds restarts back."""

from __future__ import annotations

import pytest

from kuberank_operator.autoscaling.oomrestarts import (
    PodHealth,
    plan_restarts,
    reduced_token_budget,
    restart_candidates,
    update_stuck_since,
)
from kuberank_operator.model.policies import OomPolicy, OomPolicyError, max_unavailable, oom_policy
from kuberank_operator.model.specs import OomSpec

POLICY = OomPolicy(max_events=3, window_s=600, max_restarts_per_hour=2, stuck_s=60)
NOW = 100_000.0


def pod(
    name: str,
    *,
    ooms: float | None = 0,
    ready: bool = True,
    killed_at: float | None = None,
    stuck_since: float | None = None,
    terminating: bool = False,
) -> PodHealth:
    return PodHealth(
        name=name,
        ready=ready,
        terminating=terminating,
        cuda_ooms_in_window=ooms,
        oom_killed_at=killed_at,
        stuck_since=stuck_since,
        stuck_xid=79 if stuck_since is not None else None,
    )


def test_policy_from_the_typed_spec() -> None:
    policy = oom_policy(OomSpec(max_events=5, window_seconds=60, max_restarts_per_hour=1))
    assert (policy.max_events, policy.window_s, policy.max_restarts_per_hour) == (5, 60, 1)


def test_cuda_oom_count_reaching_max_events_restarts_that_pod_only() -> None:
    plan = plan_restarts(
        policy=POLICY,
        pods=[pod("a", ooms=2), pod("b", ooms=3), pod("c", ooms=None)],
        replicas=3,
        max_unavailable=1,
        restart_times=[],
        now=NOW,
    )
    assert [(d.pod, d.kind) for d in plan.restarts] == [("b", "cuda-oom")]
    assert "3 CUDA out-of-memory errors in 600s (limit 3)" in plan.restarts[0].reason


def test_oomkilled_counts_only_inside_the_window() -> None:
    recent = pod("a", killed_at=NOW - 30)
    old = pod("b", killed_at=NOW - 3600)
    wanted = restart_candidates(policy=POLICY, pods=[recent, old], now=NOW)
    assert [(d.pod, d.kind) for d in wanted] == [("a", "oom-killed")]


def test_stuck_after_critical_xid_needs_stuck_seconds() -> None:
    wanted = restart_candidates(
        policy=POLICY,
        pods=[pod("a", stuck_since=NOW - 61, ready=False), pod("b", stuck_since=NOW - 10)],
        now=NOW,
    )
    assert [(d.pod, d.kind) for d in wanted] == [("a", "xid")]
    assert "XID 79" in wanted[0].reason


def test_rate_limit_holds_and_says_why() -> None:
    plan = plan_restarts(
        policy=POLICY,
        pods=[pod("a", ooms=9)],
        replicas=1,
        max_unavailable=1,
        restart_times=[NOW - 100, NOW - 200, NOW - 7200],
        now=NOW,
    )
    assert plan.restarts == ()
    assert "rate limit: 2 restarts in the last hour" in plan.held_back[0][1]
    assert "maxRestartsPerHour=2" in plan.held_back[0][1]


def test_zero_per_hour_disables_restarts() -> None:
    policy = OomPolicy(max_events=1, window_s=600, max_restarts_per_hour=0, stuck_s=0)
    plan = plan_restarts(
        policy=policy,
        pods=[pod("a", ooms=9)],
        replicas=1,
        max_unavailable=1,
        restart_times=[],
        now=NOW,
    )
    assert plan.restarts == ()


def test_disruption_budget_limits_ready_pods_but_not_broken_ones() -> None:
    pods = [pod("a", ooms=5), pod("b", ooms=5), pod("c", ready=False, stuck_since=NOW - 100)]
    policy = OomPolicy(max_events=3, window_s=600, max_restarts_per_hour=10, stuck_s=60)
    plan = plan_restarts(
        policy=policy, pods=pods, replicas=3, max_unavailable=1, restart_times=[], now=NOW
    )
    # c is already unavailable: restarting it costs nothing, and it is the most severe.
    # The one unavailable pod (c) uses the whole budget: a and b must wait.
    assert [d.pod for d in plan.restarts] == ["c"]
    assert [d.pod for d, _ in plan.held_back] == ["a", "b"]
    assert "disruption budget: 1 pod(s) unavailable, at most 1 allowed" in plan.held_back[0][1]
    plan = plan_restarts(
        policy=policy, pods=pods[:2], replicas=2, max_unavailable=1, restart_times=[], now=NOW
    )
    assert [d.pod for d in plan.restarts] == ["a"]


def test_missing_pods_count_as_unavailable_and_terminating_pods_are_skipped() -> None:
    plan = plan_restarts(
        policy=POLICY,
        pods=[pod("a", ooms=5), pod("b", ooms=5, terminating=True)],
        replicas=3,
        max_unavailable=2,
        restart_times=[],
        now=NOW,
    )
    assert plan.restarts == ()
    assert plan.held_back[0][0].pod == "a"


def test_update_stuck_since() -> None:
    assert (
        update_stuck_since(None, last_xid=79, ready=False, queue_depth=0, progressed=None, now=5)
        == 5
    )
    assert (
        update_stuck_since(5, last_xid=79, ready=None, queue_depth=None, progressed=None, now=9)
        == 5
    )
    # Ready and finishing work: not stuck, whatever the XID.
    assert (
        update_stuck_since(5, last_xid=79, ready=True, queue_depth=3, progressed=True, now=9)
        is None
    )
    # Ready but queued work goes nowhere: stuck.
    assert (
        update_stuck_since(None, last_xid=48, ready=True, queue_depth=3, progressed=False, now=9)
        == 9
    )
    # An application XID (13: graphics engine exception) is not a reason to restart.
    assert (
        update_stuck_since(None, last_xid=13, ready=False, queue_depth=0, progressed=None, now=9)
        is None
    )


@pytest.mark.parametrize(
    ("value", "replicas", "expected"), [(1, 5, 1), ("25%", 5, 2), ("0%", 5, 0), (0, 3, 0)]
)
def test_max_unavailable(value: int | str, replicas: int, expected: int) -> None:
    assert max_unavailable(value, replicas=replicas) == expected


def test_max_unavailable_rejects_nonsense_naming_the_field() -> None:
    with pytest.raises(OomPolicyError, match=r"spec\.rollout\.maxUnavailable"):
        max_unavailable("half", replicas=2)


def test_reduced_token_budget_reports_the_lowest_lowered_budget() -> None:
    unknown = None
    pods = [(16384, unknown), (8192, unknown), (None, unknown), (4096, unknown)]
    assert reduced_token_budget(pods, configured=16384) == 4096
    assert reduced_token_budget([(16384, unknown), (None, unknown)], configured=16384) == 0
    assert reduced_token_budget([], configured=16384) == 0


def test_a_calibrated_pod_is_judged_against_its_own_start_up_budget() -> None:
    # spec.batching.maxBatchTokens 0: each pod's calibration chose its budget
    assert reduced_token_budget([(32768, 32768), (16384, 65536)], configured=0) == 16384
    assert reduced_token_budget([(32768, 32768)], configured=0) == 0
    assert reduced_token_budget([(8192, None)], configured=0) == 0  # cannot be judged
