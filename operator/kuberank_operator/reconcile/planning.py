"""Decide what one reconcile does: which objects to apply, which events to post, when to look
again. Pure: the controller hands in what it observed and carries the decisions out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kuberank_operator.model import naming
from kuberank_operator.model.observations import ChildSummary

# After applying an object, the watch may lag: the index shows the old object for a moment.
SETTLE_SECONDS = 15.0
# Requeue while a resource is converging, in case no watch event comes (e.g. capacity frees up).
CONVERGING_REQUEUE_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 300.0


@dataclass(frozen=True)
class PlannedApply:
    obj: dict[str, Any]
    # missing, changed, drift or resync
    reason: str

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def digest(self) -> str:
        return str(self.obj["metadata"]["annotations"][naming.ANNOTATION_APPLIED_HASH])


@dataclass(frozen=True)
class Remembered:
    """What this operator process applied last for one child, and when (monotonic seconds)."""

    digest: str
    at: float


def plan_applies(
    desired: Sequence[dict[str, Any]],
    *,
    observed: Mapping[str, ChildSummary],
    remembered: Mapping[str, Remembered],
    now: float,
    resync: bool,
) -> list[PlannedApply]:
    """Objects to server-side apply. Keys of `observed` and `remembered` are kinds.

    An object the index shows with the desired hash (and, for the Deployment, the desired
    replicas) is left alone, so an operator restart re-applies nothing. An object this process
    applied moments ago is trusted over a lagging index.
    """
    plan = []
    for obj in desired:
        kind = str(obj["kind"])
        digest = str(obj["metadata"]["annotations"][naming.ANNOTATION_APPLIED_HASH])
        seen = observed.get(kind)
        mine = remembered.get(kind)
        settling = mine is not None and mine.digest == digest and now - mine.at < SETTLE_SECONDS
        reason: str | None = None
        if seen is None:
            reason = "missing"
        elif seen.applied_hash != digest:
            reason = "changed"
        elif kind == "Deployment" and seen.spec_replicas != obj["spec"].get("replicas"):
            reason = "drift"
        elif resync:
            reason = "resync"
        if reason is None or (settling and reason != "resync"):
            continue
        plan.append(PlannedApply(obj=obj, reason=reason))
    return plan


def apply_event(
    planned: PlannedApply, *, created: bool, previous_replicas: int | None
) -> tuple[str, str] | None:
    """(reason, message) of the Normal event for an apply, or None for a silent resync."""
    what = f"{planned.kind} {planned.name}"
    if created:
        return "Created", f"created {what}"
    new_replicas = planned.obj["spec"].get("replicas") if planned.kind == "Deployment" else None
    if planned.reason == "changed" and previous_replicas not in (None, new_replicas):
        return "Scaled", f"scaled {what} from {previous_replicas} to {new_replicas} pods"
    if planned.reason == "changed":
        return "Updated", f"updated {what} to the current spec"
    if planned.reason in ("drift", "missing"):
        return "DriftCorrected", f"restored {what}, which was changed or removed by someone else"
    return None


# Condition changes worth an Event: (type, new status) -> (event type, event reason).
NOTABLE_TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("Ready", "True"): ("Normal", "Ready"),
    ("Degraded", "True"): ("Warning", "Degraded"),
    ("Degraded", "False"): ("Normal", "Recovered"),
    ("CapacityLimited", "True"): ("Warning", "CapacityLimited"),
    ("CapacityLimited", "False"): ("Normal", "CapacityAvailable"),
}


def transition_events(
    changes: Sequence[tuple[str, str, str, str]], *, had_status: bool
) -> list[tuple[str, str, str]]:
    """(event type, reason, message) for condition changes; `changes` from statuses.transitions.

    On a resource's first status, "all is well" conditions (Degraded False, CapacityLimited
    False) are not news and post nothing.
    """
    events = []
    for type_, status, reason, message in changes:
        notable = NOTABLE_TRANSITIONS.get((type_, status))
        if notable is None:
            continue
        if not had_status and status == "False":
            continue
        event_type, event_reason = notable
        if type_ == "Degraded" and status == "True":
            event_reason = reason
        events.append((event_type, event_reason, message))
    return events


def requeue_after(*, state: str, failures: int, resync_seconds: float) -> float:
    """When to look at a resource again if no watch event comes first."""
    if failures > 0:
        return min(MAX_BACKOFF_SECONDS, 2.0 ** min(failures, 9))
    if state in ("Ready", "ScaledToZero"):
        return resync_seconds
    return min(CONVERGING_REQUEUE_SECONDS, resync_seconds)
