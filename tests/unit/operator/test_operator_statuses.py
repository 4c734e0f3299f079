"""The status of a RerankerDeployment, computed from what is observed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kuberank_operator.model.observations import ChildSummary, ContainerProblem, PodSummary
from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.model.signals import PodTuning
from kuberank_operator.reconcile.capacity import Capacity
from kuberank_operator.reconcile.statuses import (
    Observed,
    compute_status,
    status_changed,
    status_patch,
    transitions,
)
from tests.unit.operator.conftest import defaulted_spec, minimal_spec

ENOUGH = Capacity(resource_name="nvidia.com/gpu", needed=3, free=8, matching_nodes=1)
SHORT = Capacity(resource_name="nvidia.com/gpu", needed=3, free=1, matching_nodes=1)


def deployment(**kw: Any) -> ChildSummary:
    base = ChildSummary(
        kind="Deployment",
        namespace="ns",
        name="bge",
        owner="bge",
        owner_uid="u",
        applied_hash="h",
        generation=2,
        observed_generation=2,
        spec_replicas=3,
        replicas=3,
        ready_replicas=3,
        updated_replicas=3,
        available_replicas=3,
    )
    return dataclasses.replace(base, **kw)


def pod(
    name: str,
    *,
    ready: bool = True,
    problems: tuple[ContainerProblem, ...] = (),
    unschedulable: str | None = None,
    deleting: bool = False,
) -> PodSummary:
    return PodSummary(
        namespace="ns",
        name=name,
        owner="bge",
        node_name="" if unschedulable else "gpu-0",
        phase="Pending" if unschedulable else "Running",
        ready=ready,
        deleting=deleting,
        gpu_requests=(("nvidia.com/gpu", 1),),
        problems=problems,
        unschedulable_message=unschedulable,
    )


def observed(
    *,
    replicas: int = 3,
    dep: ChildSummary | None = None,
    pods: list[PodSummary] | None = None,
    capacity: Capacity = ENOUGH,
    **kw: Any,
) -> Observed:
    spec = parse_spec(defaulted_spec(minimal_spec(replicas=replicas, **kw.pop("spec", {}))))
    return Observed(
        name="bge",
        generation=2,
        spec=spec,
        deployment=dep,
        pods=pods if pods is not None else [pod("a"), pod("b"), pod("c")],
        capacity=capacity,
        **kw,
    )


def conditions(view: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in view.conditions}


def test_all_ready() -> None:
    view = compute_status(observed(dep=deployment()))
    assert (view.state, view.ready, view.selector) == (
        "Ready",
        "3/3",
        "kuberank.dev/rerankerdeployment=bge",
    )
    assert conditions(view) == {
        "Ready": ("True", "AllReplicasReady"),
        "Progressing": ("False", "Complete"),
        "Degraded": ("False", "AsExpected"),
        "CapacityLimited": ("False", "SufficientDevices"),
        "TuningApplied": ("False", "NotRequested"),
    }


def test_not_ready_until_ready_replicas_reach_desired() -> None:
    view = compute_status(observed(dep=deployment(ready_replicas=2)))
    assert view.state == "Progressing"
    assert conditions(view)["Ready"] == ("False", "PodsNotReady")
    assert conditions(view)["Progressing"] == ("True", "ScalingUp")


def test_no_deployment_yet() -> None:
    view = compute_status(observed(dep=None, pods=[]))
    assert conditions(view)["Ready"] == ("False", "Creating")
    assert conditions(view)["Progressing"] == ("True", "Creating")


@pytest.mark.parametrize("reason", ["CrashLoopBackOff", "OOMKilled"])
def test_crash_looping_pod_is_never_ready(reason: str) -> None:
    broken = pod(
        "b", problems=(ContainerProblem(reason=reason, container="inference", message="boom"),)
    )
    # The Deployment still counts 3 ready (a pod between restarts can look ready).
    view = compute_status(observed(dep=deployment(), pods=[pod("a"), broken, pod("c")]))
    assert view.state == "Degraded"
    assert view.reason == reason
    assert conditions(view)["Ready"] == ("False", reason)
    assert view.condition("Degraded").message == "pod b: boom"


def test_worst_problem_wins_and_others_are_counted() -> None:
    pull = ContainerProblem(reason="ImagePullBackOff", container="inference", message="no image")
    oom = ContainerProblem(reason="OOMKilled", container="inference", message="oom")
    view = compute_status(
        observed(
            dep=deployment(ready_replicas=1),
            pods=[pod("a", problems=(pull,)), pod("b", problems=(oom,)), pod("c")],
        )
    )
    degraded = view.condition("Degraded")
    assert (degraded.reason, degraded.message) == ("OOMKilled", "pod b: oom (and 1 more pod)")


def test_image_pull_during_rollout_degrades_but_old_pods_keep_serving() -> None:
    pull = ContainerProblem(reason="ImagePullBackOff", container="inference", message="no image")
    view = compute_status(
        observed(
            dep=deployment(updated_replicas=1),
            pods=[pod("a"), pod("b"), pod("c"), pod("new", ready=False, problems=(pull,))],
        )
    )
    assert conditions(view)["Ready"] == ("True", "AllReplicasReady")
    assert conditions(view)["Degraded"] == ("True", "ImagePullBackOff")
    assert conditions(view)["Progressing"] == ("True", "RollingOut")
    assert view.state == "Degraded"


def test_capacity_limited() -> None:
    pending = pod(
        "c", ready=False, unschedulable="0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    )
    view = compute_status(
        observed(dep=deployment(ready_replicas=1), pods=[pod("a"), pending], capacity=SHORT)
    )
    assert view.state == "CapacityLimited"
    capacity = view.condition("CapacityLimited")
    assert (capacity.status, capacity.message) == (
        "True",
        "needs 3 nvidia.com/gpu, 1 free on 1 matching node",
    )
    assert conditions(view)["Ready"] == ("False", "CapacityLimited")
    # The Pending pod is explained by capacity, not reported as degradation.
    assert conditions(view)["Degraded"] == ("False", "AsExpected")


def test_unschedulable_for_other_reasons_degrades() -> None:
    pending = pod("c", ready=False, unschedulable="0/3 nodes are available: 3 Insufficient memory.")
    view = compute_status(
        observed(dep=deployment(ready_replicas=2), pods=[pod("a"), pod("b"), pending])
    )
    assert conditions(view)["Degraded"] == ("True", "Unschedulable")
    assert "Insufficient memory" in view.condition("Degraded").message


def test_deleting_pods_are_ignored() -> None:
    gone = pod(
        "old",
        problems=(ContainerProblem(reason="CrashLoopBackOff", container="x", message="m"),),
        deleting=True,
    )
    view = compute_status(observed(dep=deployment(), pods=[pod("a"), pod("b"), pod("c"), gone]))
    assert view.state == "Ready"


def test_scaled_to_zero_and_scaling_down() -> None:
    zero = compute_status(
        observed(
            replicas=0,
            dep=deployment(spec_replicas=0, replicas=0, ready_replicas=0, updated_replicas=0),
            pods=[],
        )
    )
    assert (zero.state, conditions(zero)["Ready"]) == ("ScaledToZero", ("True", "ScaledToZero"))
    down = compute_status(observed(replicas=1, dep=deployment(spec_replicas=1)))
    assert conditions(down)["Progressing"] == ("True", "ScalingDown")


def test_deployment_failures_and_apply_errors() -> None:
    stalled = compute_status(
        observed(dep=deployment(ready_replicas=0, progress_deadline_exceeded=True))
    )
    assert conditions(stalled)["Degraded"] == ("True", "ProgressDeadlineExceeded")
    quota = compute_status(observed(dep=deployment(replica_failure="exceeded quota")))
    assert conditions(quota)["Degraded"] == ("True", "ReplicaFailure")
    failed = compute_status(
        observed(dep=deployment(), apply_error="could not apply Service bge: 422")
    )
    assert conditions(failed)["Degraded"] == ("True", "ApplyFailed")


def test_tuning_condition() -> None:
    spec_tuning = {"gpu": {"powerLimitWatts": 300}}
    waiting = compute_status(observed(dep=deployment(), spec=spec_tuning))
    assert conditions(waiting)["TuningApplied"] == ("Unknown", "AwaitingSidecar")
    every = {p: PodTuning("applied") for p in "abc"}
    applied = compute_status(observed(dep=deployment(), spec=spec_tuning, tuning_states=every))
    assert conditions(applied)["TuningApplied"] == ("True", "Applied")
    one_refused = {**every, "b": PodTuning("refused", "shared_gpu")}
    refused = compute_status(
        observed(dep=deployment(), spec=spec_tuning, tuning_states=one_refused)
    )
    assert conditions(refused)["TuningApplied"] == ("False", "Refused")


def test_patch_keeps_transition_times_and_leaves_foreign_fields_alone() -> None:
    view = compute_status(observed(dep=deployment()))
    first = status_patch(view, previous=None, now="2026-11-22T10:00:00Z")
    assert "lastScale" not in first
    assert "oom" not in first
    assert first["observedGeneration"] == 2
    assert first["replicas"] == 3
    stored = {**first, "lastScale": {"to": 3}}
    again = status_patch(view, previous=stored, now="2026-11-22T11:00:00Z")
    assert again == first
    assert not status_changed(again, stored)
    assert transitions(again, stored) == []
    worse = compute_status(observed(dep=deployment(ready_replicas=2)))
    later = status_patch(worse, previous=stored, now="2026-11-22T12:00:00Z")
    ready = next(c for c in later["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2026-11-22T12:00:00Z"
    degraded = next(c for c in later["conditions"] if c["type"] == "Degraded")
    assert degraded["lastTransitionTime"] == "2026-11-22T10:00:00Z"
    assert status_changed(later, stored)
    assert [t[:3] for t in transitions(later, stored)] == [
        ("Ready", "False", "PodsNotReady"),
        ("Progressing", "True", "ScalingUp"),
    ]
