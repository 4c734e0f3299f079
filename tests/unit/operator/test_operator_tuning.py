"""TuningApplied: reading the sidecars' tuning state and the pure status rule built on it."""

from __future__ import annotations

from typing import Any

import pytest

from kuberank_operator.model.observations import PodSummary
from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.model.signals import MetricsFormatError, PodTuning, parse_tuning_state
from kuberank_operator.reconcile.capacity import Capacity
from kuberank_operator.reconcile.statuses import Condition, Observed, compute_status
from tests.unit.operator.conftest import defaulted_spec, minimal_spec

HEADER = (
    "# HELP kuberank_gpu_tuning_state 1 for the GPU's power-limit/clock tuning state.\n"
    "# TYPE kuberank_gpu_tuning_state gauge\n"
)


def series(gpu: int, state: str, reason: str = "") -> str:
    return (
        f'kuberank_gpu_tuning_state{{gpu="{gpu}",UUID="GPU-{gpu}",Hostname="h",'
        f'namespace="ns",pod="p",state="{state}",reason="{reason}"}} 1.0\n'
    )


def test_parse_reads_the_single_gpu_state() -> None:
    text = (
        HEADER
        + series(0, "applied")
        + '# TYPE DCGM_FI_DEV_GPU_UTIL gauge\nDCGM_FI_DEV_GPU_UTIL{gpu="0"} 3\n'
    )
    assert parse_tuning_state(text) == PodTuning("applied", "", 1)


def test_parse_takes_the_worst_gpu_and_counts_its_peers() -> None:
    text = (
        HEADER
        + series(0, "applied")
        + series(1, "denied", "no_permission")
        + series(2, "refused", "shared_gpu")
        + series(3, "denied", "no_permission")
    )
    assert parse_tuning_state(text) == PodTuning("denied", "no_permission", 2)


def test_parse_ranks_an_unknown_state_as_a_failure_not_as_applied() -> None:
    text = HEADER + series(0, "applied") + series(1, "exploded", "x")
    assert parse_tuning_state(text) == PodTuning("exploded", "x", 1)


def test_parse_without_the_series_is_none_and_garbage_raises() -> None:
    assert (
        parse_tuning_state('# TYPE DCGM_FI_DEV_GPU_UTIL gauge\nDCGM_FI_DEV_GPU_UTIL{gpu="0"} 3\n')
        is None
    )
    assert parse_tuning_state(HEADER + series(0, "applied").replace("1.0", "0.0")) is None
    with pytest.raises(MetricsFormatError):
        parse_tuning_state("kuberank_gpu_tuning_state{state= 1\n")


def pod(name: str, *, ready: bool = True, deleting: bool = False) -> PodSummary:
    return PodSummary(
        namespace="ns",
        name=name,
        owner="bge",
        node_name="gpu-0",
        phase="Running",
        ready=ready,
        deleting=deleting,
        gpu_requests=(("nvidia.com/gpu", 1),),
        ip="127.0.0.9",
    )


def tuning(
    states: dict[str, PodTuning] | None,
    *,
    pods: list[PodSummary] | None = None,
    gpu: dict[str, Any] | None = None,
    **spec: Any,
) -> Condition:
    parsed = parse_spec(
        defaulted_spec(minimal_spec(replicas=2, gpu=gpu or {"powerLimitWatts": 300}, **spec))
    )
    view = compute_status(
        Observed(
            name="bge",
            generation=1,
            spec=parsed,
            deployment=None,
            pods=pods if pods is not None else [pod("bge-a"), pod("bge-b")],
            capacity=Capacity("nvidia.com/gpu", needed=2, free=8, matching_nodes=1),
            tuning_states=states,
        )
    )
    return view.condition("TuningApplied")


APPLIED = PodTuning("applied")


def test_no_tuning_asked_is_false_not_requested() -> None:
    cond = tuning(None, gpu={"powerLimitWatts": 0})
    assert (cond.status, cond.reason) == ("False", "NotRequested")


def test_every_ready_pod_applied_is_true() -> None:
    cond = tuning({"bge-a": APPLIED, "bge-b": APPLIED})
    assert (cond.status, cond.reason) == ("True", "Applied")
    assert "power limit 300 W applied on all 2 ready pods" in cond.message


def test_locked_clocks_are_named() -> None:
    cond = tuning(
        {"bge-a": APPLIED, "bge-b": APPLIED},
        gpu={"lockedClocks": {"graphicsMinMHz": 1200, "graphicsMaxMHz": 1500}},
    )
    assert (cond.status, cond.reason) == ("True", "Applied")
    assert "locked clocks" in cond.message


def test_unobserved_or_pending_pods_leave_it_unknown_and_are_named() -> None:
    nothing = tuning(None)
    assert (nothing.status, nothing.reason) == ("Unknown", "AwaitingSidecar")
    half = tuning({"bge-a": APPLIED})
    assert (half.status, half.reason) == ("Unknown", "AwaitingSidecar")
    assert "1/2 ready pods" in half.message
    assert "bge-b" in half.message
    pending = tuning({"bge-a": APPLIED, "bge-b": PodTuning("pending")})
    assert (pending.status, pending.reason) == ("Unknown", "AwaitingSidecar")
    # A pod of the previous spec, whose sidecar was not asked to tune, is not a failure.
    old = tuning({"bge-a": APPLIED, "bge-b": PodTuning("disabled")})
    assert (old.status, old.reason) == ("Unknown", "AwaitingSidecar")


def test_no_ready_pod_is_unknown() -> None:
    cond = tuning({"bge-a": APPLIED}, pods=[pod("bge-a", ready=False)])
    assert (cond.status, cond.reason) == ("Unknown", "AwaitingSidecar")
    assert "no pod is ready" in cond.message


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("denied", "no_permission", "Denied"),
        ("refused", "shared_gpu", "Refused"),
        ("failed", "nvml_error", "Failed"),
    ],
)
def test_a_failure_is_false_naming_the_pod_and_the_sidecar_reason(
    state: str, reason: str, expected: str
) -> None:
    cond = tuning({"bge-a": APPLIED, "bge-b": PodTuning(state, reason)})
    assert (cond.status, cond.reason) == ("False", expected)
    assert f"pod bge-b: {state} ({reason})" in cond.message
    assert "1/2 ready pods" in cond.message


def test_the_worst_failure_wins_and_every_pod_is_named() -> None:
    cond = tuning(
        {"bge-a": PodTuning("refused", "shared_gpu"), "bge-b": PodTuning("failed", "")},
    )
    assert (cond.status, cond.reason) == ("False", "Failed")
    assert cond.message.index("pod bge-b: failed") < cond.message.index(
        "pod bge-a: refused (shared_gpu)"
    )


def test_a_failure_wins_over_pods_not_yet_observed() -> None:
    cond = tuning({"bge-a": PodTuning("denied", "no_permission")})
    assert (cond.status, cond.reason) == ("False", "Denied")


def test_pods_not_ready_or_deleting_do_not_count() -> None:
    pods = [pod("bge-a"), pod("bge-b", ready=False), pod("bge-c", deleting=True)]
    states = {"bge-a": APPLIED, "bge-b": PodTuning("refused", "shared_gpu")}
    cond = tuning({**states, "bge-c": PodTuning("failed")}, pods=pods)
    assert (cond.status, cond.reason) == ("True", "Applied")


def test_tuning_without_the_sidecar_is_false() -> None:
    cond = tuning(None, sidecar={"enabled": False})
    assert (cond.status, cond.reason) == ("False", "SidecarDisabled")
    assert "spec.sidecar.enabled" in cond.message
