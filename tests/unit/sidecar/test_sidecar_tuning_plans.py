"""Tuning decisions: requests checked against the card, unsafe cases refused with reasons."""

from __future__ import annotations

import pytest

from kuberank_sidecar.devices import TuningLimits
from kuberank_sidecar.tuning_plans import (
    ClockRange,
    GpuFacts,
    JournalEntry,
    Refusal,
    TuningRequest,
    parse_clock_range,
    plan_tuning,
)

LIMITS = TuningLimits(
    power_min_w=200.0,
    power_max_w=700.0,
    power_default_w=700.0,
    power_current_w=700.0,
    memory_clocks_mhz=(2619,),
    graphics_clocks_mhz=tuple(range(345, 1981, 15)),
)
EXCLUSIVE = GpuFacts(gpu_uuid="GPU-a", limits=LIMITS, sharing_known=True)
REQUEST = TuningRequest(power_limit_w=450.0, gpu_clocks=ClockRange(1200, 1980))


def test_valid_request_becomes_actions_with_restore_values() -> None:
    plan = plan_tuning(REQUEST, EXCLUSIVE)
    assert plan.refusal is None
    assert plan.set_power_limit_w == 450.0
    assert plan.lock_gpu_clocks == ClockRange(1200, 1980)
    assert plan.restore_power_limit_w == 700.0
    assert plan.reset_gpu_clocks
    assert not plan.reset_memory_clocks


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (
            GpuFacts(gpu_uuid="GPU-a", limits=LIMITS, mig_device="MIG-x", sharing_known=True),
            Refusal.MIG_DEVICE,
        ),
        (
            GpuFacts(gpu_uuid="GPU-a", limits=LIMITS, mig_enabled=True, sharing_known=True),
            Refusal.MIG_DEVICE,
        ),
        (
            GpuFacts(gpu_uuid="GPU-a", limits=LIMITS, shared=True, sharing_known=True),
            Refusal.SHARED_GPU,
        ),
        (GpuFacts(gpu_uuid="GPU-a", limits=LIMITS), Refusal.SHARING_UNKNOWN),
    ],
)
def test_unsafe_devices_are_refused(facts: GpuFacts, reason: Refusal) -> None:
    plan = plan_tuning(REQUEST, facts)
    assert plan.refusal is reason
    assert not plan.has_actions
    assert "GPU-a" in plan.message


def test_assume_exclusive_lifts_only_the_unknown_sharing_refusal() -> None:
    assert (
        plan_tuning(
            REQUEST, GpuFacts(gpu_uuid="GPU-a", limits=LIMITS), assume_exclusive=True
        ).refusal
        is None
    )
    shared = GpuFacts(gpu_uuid="GPU-a", limits=LIMITS, shared=True, sharing_known=True)
    assert plan_tuning(REQUEST, shared, assume_exclusive=True).refusal is Refusal.SHARED_GPU


@pytest.mark.parametrize("assume_exclusive", [False, True])
def test_more_cuda_processes_than_the_pod_runs_is_a_shared_gpu(assume_exclusive: bool) -> None:
    # two pods handed one card: NVML counts every container's CUDA context, whatever the claim
    facts = GpuFacts(gpu_uuid="GPU-a", limits=LIMITS, compute_processes=2)
    plan = plan_tuning(REQUEST, facts, assume_exclusive=assume_exclusive)
    assert plan.refusal is Refusal.SHARED_GPU
    assert "2 processes hold a CUDA context" in plan.message
    assert not plan.has_actions


@pytest.mark.parametrize("processes", [None, 0, 1])
def test_the_pods_own_process_or_an_unknown_count_is_not_sharing(processes: int | None) -> None:
    facts = GpuFacts(
        gpu_uuid="GPU-a", limits=LIMITS, sharing_known=True, compute_processes=processes
    )
    assert plan_tuning(REQUEST, facts).refusal is None


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (
            TuningRequest(power_limit_w=900.0),
            "--power-limit-watts: 900 W is outside this GPU's 200–700 W",
        ),
        (TuningRequest(power_limit_w=100.0), "200–700 W"),
        (
            TuningRequest(gpu_clocks=ClockRange(100, 1980)),
            "--gpu-locked-clocks: 100:1980 MHz is outside the supported 345:1980",
        ),
        (TuningRequest(memory_clocks=ClockRange(2619, 3000)), "--memory-locked-clocks"),
        (TuningRequest(gpu_clocks=ClockRange(1500, 1200)), "swap them"),
    ],
)
def test_invalid_requests_name_the_flag_and_the_limit(request_: TuningRequest, needle: str) -> None:
    plan = plan_tuning(request_, EXCLUSIVE)
    assert plan.refusal is Refusal.INVALID_REQUEST
    assert needle in plan.message


def test_a_crashed_predecessor_journal_sets_the_restore_baseline() -> None:
    limits = TuningLimits(**{**LIMITS.__dict__, "power_current_w": 300.0})
    journal = JournalEntry(
        previous_power_limit_w=650.0, power_limit_w=300.0, gpu_clocks=ClockRange(900, 900), pid=41
    )
    plan = plan_tuning(
        TuningRequest(power_limit_w=450.0),
        GpuFacts(gpu_uuid="GPU-a", limits=limits, sharing_known=True),
        journal=journal,
    )
    assert plan.restore_power_limit_w == 650.0
    assert plan.reset_gpu_clocks
    assert "pid 41" in plan.inherited[0]


def test_a_power_limit_set_by_someone_else_is_reported_and_kept_as_baseline() -> None:
    limits = TuningLimits(**{**LIMITS.__dict__, "power_current_w": 500.0})
    plan = plan_tuning(
        TuningRequest(power_limit_w=450.0),
        GpuFacts(gpu_uuid="GPU-a", limits=limits, sharing_known=True),
    )
    assert plan.restore_power_limit_w == 500.0
    assert "not the default 700 W" in plan.inherited[0]


@pytest.mark.parametrize(
    ("value", "needle"), [("1200", "MIN:MAX"), ("a:b", "MIN:MAX"), ("1500:1200", "write 1200:1500")]
)
def test_clock_flags_are_parsed_strictly(value: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_clock_range("--gpu-locked-clocks", value)
    assert parse_clock_range("--gpu-locked-clocks", "1200:1980") == ClockRange(1200, 1980)
