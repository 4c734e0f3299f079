"""Leader election on a coordination.k8s.io Lease, the decisions only (pure).

Two or more operator replicas all watch and keep their indexes warm; only the holder of the
Lease reconciles, scales and restarts pods. As client-go does, expiry is judged by this
process's own clock since it last saw the record change, never by comparing the holder's
timestamps with ours, so clock skew between nodes cannot elect two leaders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Decision = Literal["create", "renew", "take", "wait"]


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    renew_time: str
    duration_s: int
    transitions: int
    acquire_time: str
    resource_version: str


@dataclass(frozen=True)
class Observation:
    """The record as last seen, and when (monotonic seconds of this process) it last changed."""

    record: LeaseRecord | None
    changed_at: float


def parse_lease(body: dict[str, Any]) -> LeaseRecord:
    spec = body.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        duration_s=int(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        acquire_time=str(spec.get("acquireTime") or ""),
        resource_version=str((body.get("metadata") or {}).get("resourceVersion") or ""),
    )


def observe(previous: Observation | None, record: LeaseRecord | None, *, now: float) -> Observation:
    """Keep the time of the last change: a holder that stops renewing leaves the record still."""
    if previous is not None and _same(previous.record, record):
        return previous
    return Observation(record=record, changed_at=now)


def _same(a: LeaseRecord | None, b: LeaseRecord | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.holder, a.renew_time, a.transitions) == (b.holder, b.renew_time, b.transitions)


def decide(observation: Observation, *, me: str, now: float, duration_s: float) -> Decision:
    record = observation.record
    if record is None:
        return "create"
    if record.holder == me:
        return "renew"
    # An empty holder means the last leader stepped down cleanly.
    if not record.holder or now - observation.changed_at > max(duration_s, record.duration_s):
        return "take"
    return "wait"


def micro_time(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(
    *,
    name: str,
    namespace: str,
    holder: str,
    duration_s: int,
    previous: LeaseRecord | None,
    now: str,
) -> dict[str, Any]:
    """The Lease to write: a renewal keeps acquireTime, a takeover counts a transition."""
    renewing = previous is not None and previous.holder == holder
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if previous is not None:
        # Optimistic concurrency: if another replica wrote in between, this update gets 409.
        metadata["resourceVersion"] = previous.resource_version
    transitions = 0 if previous is None else previous.transitions + (0 if renewing else 1)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration_s,
            "acquireTime": previous.acquire_time if renewing and previous else now,
            "renewTime": now,
            "leaseTransitions": transitions,
        },
    }
