"""Token budgets: fitted into device memory under the safety margin, halved after OOM, restored."""

from __future__ import annotations

import pytest

from kuberank_inference.engine.budget import TokenBudget, plan_token_budget

GIB = 2**30


def test_memory_caps_the_configured_budget() -> None:
    plan = plan_token_budget(
        configured=65536,
        device_total_bytes=10 * GIB,
        safety_margin=0.1,
        resident_bytes=5 * GIB,
        bytes_per_token=100_000.0,
        batches_in_flight=2,
        floor=512,
    )
    usable = int(10 * GIB * 0.9) - 5 * GIB
    assert plan.usable_bytes == usable
    assert plan.token_budget == int(usable / (100_000.0 * 2))
    assert plan.limited_by_memory


def test_roomy_device_keeps_the_configured_budget() -> None:
    plan = plan_token_budget(
        configured=16384,
        device_total_bytes=80 * GIB,
        safety_margin=0.1,
        resident_bytes=GIB,
        bytes_per_token=30_000.0,
        batches_in_flight=2,
        floor=512,
    )
    assert plan.token_budget == 16384
    assert not plan.limited_by_memory


def test_budget_never_drops_below_one_sequence() -> None:
    plan = plan_token_budget(
        configured=16384,
        device_total_bytes=GIB,
        safety_margin=0.5,
        resident_bytes=GIB,
        bytes_per_token=1000.0,
        batches_in_flight=2,
        floor=512,
    )
    assert plan.token_budget == 512


def test_margin_outside_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="safety_margin"):
        plan_token_budget(
            configured=1,
            device_total_bytes=1,
            safety_margin=1.0,
            resident_bytes=0,
            bytes_per_token=1.0,
            batches_in_flight=1,
            floor=1,
        )


def test_oom_halves_then_recovers_step_by_step() -> None:
    budget = TokenBudget(ceiling=16384, floor=512, recovery_seconds=60.0)
    assert budget.current(now=0.0) == 16384
    assert budget.record_oom(now=100.0, batch_tokens=12000) == 6000
    assert budget.current(now=159.0) == 6000
    assert budget.current(now=160.0) == 12000
    assert budget.current(now=220.0) == 16384
    assert budget.current(now=10_000.0) == 16384


def test_repeated_ooms_stop_at_the_floor() -> None:
    budget = TokenBudget(ceiling=4096, floor=512, recovery_seconds=60.0)
    for step in range(10):
        budget.record_oom(now=float(step), batch_tokens=4096)
    assert budget.current(now=10.0) == 512
