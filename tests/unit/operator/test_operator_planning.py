"""What a reconcile applies, which events it posts, when it looks again."""

from __future__ import annotations

from kuberank_operator.model import naming
from kuberank_operator.model.naming import Owner
from kuberank_operator.model.observations import ChildSummary
from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.reconcile.planning import (
    SETTLE_SECONDS,
    PlannedApply,
    Remembered,
    apply_event,
    plan_applies,
    requeue_after,
    transition_events,
)
from kuberank_operator.rendering.children import render_children
from tests.unit.operator.conftest import defaulted_spec, minimal_spec

OWNER = Owner(namespace="ns", name="bge", uid="u")
DESIRED = render_children(OWNER, parse_spec(defaulted_spec(minimal_spec(replicas=2))))


def digest(kind: str) -> str:
    obj = next(o for o in DESIRED if o["kind"] == kind)
    return str(obj["metadata"]["annotations"][naming.ANNOTATION_APPLIED_HASH])


def seen(kind: str, *, applied_hash: str | None = None, replicas: int = 2) -> ChildSummary:
    return ChildSummary(
        kind=kind,
        namespace="ns",
        name="bge",
        owner="bge",
        owner_uid="u",
        applied_hash=digest(kind) if applied_hash is None else applied_hash,
        spec_replicas=replicas if kind == "Deployment" else 0,
    )


ALL_SEEN = {k: seen(k) for k in ("Deployment", "Service", "PodDisruptionBudget")}


def reasons(plan: list[PlannedApply]) -> dict[str, str]:
    return {p.kind: p.reason for p in plan}


def test_nothing_to_do_when_the_index_shows_the_desired_objects() -> None:
    assert plan_applies(DESIRED, observed=ALL_SEEN, remembered={}, now=100, resync=False) == []


def test_restart_with_a_changed_spec_applies_only_what_changed() -> None:
    observed = {**ALL_SEEN, "Deployment": seen("Deployment", applied_hash="old")}
    plan = plan_applies(DESIRED, observed=observed, remembered={}, now=100, resync=False)
    assert reasons(plan) == {"Deployment": "changed"}


def test_missing_objects_are_created_and_drift_is_fixed() -> None:
    observed = {"Deployment": seen("Deployment", replicas=5)}
    plan = plan_applies(DESIRED, observed=observed, remembered={}, now=100, resync=False)
    assert reasons(plan) == {
        "Deployment": "drift",
        "Service": "missing",
        "PodDisruptionBudget": "missing",
    }


def test_a_lagging_index_is_trusted_less_than_a_fresh_apply() -> None:
    remembered = {k: Remembered(digest=digest(k), at=100.0) for k in ALL_SEEN}
    soon = plan_applies(DESIRED, observed={}, remembered=remembered, now=101, resync=False)
    assert soon == []
    later = plan_applies(
        DESIRED, observed={}, remembered=remembered, now=100 + SETTLE_SECONDS + 1, resync=False
    )
    assert set(reasons(later)) == set(ALL_SEEN)


def test_resync_reapplies_everything() -> None:
    plan = plan_applies(DESIRED, observed=ALL_SEEN, remembered={}, now=100, resync=True)
    assert set(reasons(plan).values()) == {"resync"}


def test_apply_events() -> None:
    dep = next(o for o in DESIRED if o["kind"] == "Deployment")
    assert apply_event(PlannedApply(dep, "missing"), created=True, previous_replicas=None) == (
        "Created",
        "created Deployment bge",
    )
    assert apply_event(PlannedApply(dep, "changed"), created=False, previous_replicas=1) == (
        "Scaled",
        "scaled Deployment bge from 1 to 2 pods",
    )
    updated = apply_event(PlannedApply(dep, "changed"), created=False, previous_replicas=2)
    assert updated is not None
    assert updated[0] == "Updated"
    drift = apply_event(PlannedApply(dep, "drift"), created=False, previous_replicas=5)
    assert drift is not None
    assert drift[0] == "DriftCorrected"
    assert apply_event(PlannedApply(dep, "resync"), created=False, previous_replicas=2) is None


def test_transition_events() -> None:
    first = [
        ("Ready", "False", "Creating", "m"),
        ("Degraded", "False", "AsExpected", "m"),
        ("CapacityLimited", "True", "InsufficientDevices", "needs 6"),
    ]
    assert transition_events(first, had_status=False) == [("Warning", "CapacityLimited", "needs 6")]
    later = [
        ("Ready", "True", "AllReplicasReady", "3/3 pods ready"),
        ("Degraded", "True", "OOMKilled", "pod x"),
        ("CapacityLimited", "False", "SufficientDevices", "ok"),
        ("Degraded", "False", "AsExpected", "fine"),
    ]
    assert transition_events(later, had_status=True) == [
        ("Normal", "Ready", "3/3 pods ready"),
        ("Warning", "OOMKilled", "pod x"),
        ("Normal", "CapacityAvailable", "ok"),
        ("Normal", "Recovered", "fine"),
    ]


def test_requeue_policy() -> None:
    assert requeue_after(state="Ready", failures=0, resync_seconds=300) == 300
    assert requeue_after(state="Progressing", failures=0, resync_seconds=300) == 30
    backoffs = [requeue_after(state="Ready", failures=n, resync_seconds=300) for n in range(1, 12)]
    assert backoffs == sorted(backoffs)
    assert backoffs[0] == 2
    assert backoffs[-1] == 300


def test_planned_apply_accessors() -> None:
    planned = PlannedApply(DESIRED[1], "missing")
    assert (planned.kind, planned.name, planned.digest) == ("Service", "bge", digest("Service"))
