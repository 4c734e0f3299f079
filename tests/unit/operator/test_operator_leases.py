"""Leader-election decisions on a Lease, judged by this process's own clock."""

from __future__ import annotations

from kuberank_operator.cluster.leases import (
    LeaseRecord,
    Observation,
    decide,
    lease_body,
    observe,
    parse_lease,
)


def record(holder: str, renew: str = "t1", transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(
        holder=holder,
        renew_time=renew,
        duration_s=15,
        transitions=transitions,
        acquire_time="t0",
        resource_version="42",
    )


def test_no_lease_means_create_and_own_lease_means_renew() -> None:
    assert decide(Observation(None, 0.0), me="a", now=100.0, duration_s=15) == "create"
    assert decide(Observation(record("a"), 0.0), me="a", now=100.0, duration_s=15) == "renew"


def test_another_holder_is_waited_out_by_our_clock() -> None:
    seen = observe(None, record("b", "t1"), now=100.0)
    assert decide(seen, me="a", now=110.0, duration_s=15) == "wait"
    # b renews: the record changes, our timer restarts.
    seen = observe(seen, record("b", "t2"), now=112.0)
    assert seen.changed_at == 112.0
    assert decide(seen, me="a", now=126.0, duration_s=15) == "wait"
    # b stops renewing: the record stays still for longer than the lease.
    still = observe(seen, record("b", "t2"), now=128.0)
    assert still.changed_at == 112.0
    assert decide(still, me="a", now=128.0, duration_s=15) == "take"


def test_a_released_lease_is_taken_at_once() -> None:
    seen = observe(None, record("", "t3"), now=100.0)
    assert decide(seen, me="a", now=100.0, duration_s=15) == "take"


def test_the_longer_of_the_two_durations_counts() -> None:
    long_lease = LeaseRecord("b", "t1", 60, 0, "t0", "1")
    seen = observe(None, long_lease, now=0.0)
    assert decide(seen, me="a", now=30.0, duration_s=15) == "wait"


def test_lease_bodies() -> None:
    created = lease_body(
        name="op", namespace="ns", holder="a", duration_s=15, previous=None, now="T"
    )
    assert "resourceVersion" not in created["metadata"]
    assert created["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "T",
        "renewTime": "T",
        "leaseTransitions": 0,
    }
    renewed = lease_body(
        name="op", namespace="ns", holder="a", duration_s=15, previous=record("a"), now="T2"
    )
    assert renewed["metadata"]["resourceVersion"] == "42"
    assert (renewed["spec"]["acquireTime"], renewed["spec"]["leaseTransitions"]) == ("t0", 0)
    taken = lease_body(
        name="op",
        namespace="ns",
        holder="a",
        duration_s=15,
        previous=record("b", transitions=3),
        now="T3",
    )
    assert (taken["spec"]["acquireTime"], taken["spec"]["leaseTransitions"]) == ("T3", 4)
    assert parse_lease(taken | {"metadata": {"resourceVersion": "7"}}).holder == "a"
