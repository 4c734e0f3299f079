"""Two operator replicas: only the holder of the Lease acts; when it is killed the standby
takes over and carries on; a clean stop hands the Lease back at once.

The evidence is what the API server and each process report, never log wording: the Lease's
holder, each process's own counters of applies and reconciles, the status field managers, and a
change made only after the failover."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from kuberank_operator.model.naming import FIELD_MANAGER, StatusWriter
from localcluster import LocalCluster, wait_until
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.operator_support import (
    GpuPool,
    apply,
    get_rrd,
    minimal_spec,
    ready_with,
    rrd_manifest,
    wait_for_state,
)

LEASE = "kuberank-operator"


def counted(op: OperatorProcess, family: str) -> float:
    """The total of one of the operator's own counters, from its /metrics."""
    for metric in text_string_to_metric_families(op.metrics()):
        if metric.name == family.removesuffix("_total"):
            return sum(s.value for s in metric.samples if s.name == family)
    return 0.0


def managers(body: dict[str, object], *, of: str) -> set[str]:
    """The field managers that own part of `of` ("spec", "status") of an object."""
    meta = body["metadata"]
    assert isinstance(meta, dict)
    return {
        entry["manager"]
        for entry in meta.get("managedFields") or []
        if f"f:{of}" in (entry.get("fieldsV1") or {})
    }


def test_only_the_leader_acts_and_a_standby_takes_over(
    local_cluster: LocalCluster,
    rrd_namespace: str,
    gpu_pools: Callable[..., GpuPool],
    operators: Callable[..., OperatorProcess],
) -> None:
    ns = rrd_namespace
    pool = gpu_pools(1, gpus=4)
    election = ("--leader-election", "true", "--leader-election-namespace", ns,
                "--leader-election-seconds", "4")  # fmt: skip

    def holder() -> str:
        lease = local_cluster.kubectl_json("get", "lease", LEASE, "-n", ns)
        return str(lease["spec"].get("holderIdentity") or "")

    def lease_held() -> bool:
        found = local_cluster.kubectl("get", "lease", LEASE, "-n", ns, check=False)
        return found.returncode == 0 and holder() != ""

    first = operators(ns, extra_args=election)
    wait_until(lease_held, timeout=60, what="a leader holding the Lease")
    leader_identity = holder()
    second = operators(ns, extra_args=election)
    apply(local_cluster, ns, rrd_manifest("ranker", minimal_spec(replicas=1, **pool.placement)))
    wait_for_state(local_cluster, ns, "ranker", ready_with(1), what="Ready under the leader")
    assert holder() == leader_identity, "the first replica kept the Lease"
    assert counted(first, "kuberank_operator_applies_total") >= 1
    deployment = local_cluster.kubectl_json(
        "get", "deployment", "ranker", "-n", ns, "--show-managed-fields"
    )
    assert managers(deployment, of="spec") == {FIELD_MANAGER}
    rrd = local_cluster.kubectl_json("get", "rrd", "ranker", "-n", ns, "--show-managed-fields")
    assert StatusWriter.RECONCILER in managers(rrd, of="status")
    # A standby must not act: it has reconciled nothing and applied nothing.
    assert counted(second, "kuberank_operator_reconciles_total") == 0
    assert counted(second, "kuberank_operator_applies_total") == 0

    first.kill()
    local_cluster.kubectl("scale", "rrd", "ranker", "--replicas=2", "-n", ns)
    wait_for_state(local_cluster, ns, "ranker", ready_with(2), what="Ready under the new leader")
    # Only the second replica is alive: the change after the failover is its work.
    assert counted(second, "kuberank_operator_applies_total") >= 1
    deployment = local_cluster.kubectl_json("get", "deployment", "ranker", "-n", ns)
    assert deployment["spec"]["replicas"] == 2
    body = get_rrd(local_cluster, ns, "ranker")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    lease = local_cluster.kubectl_json("get", "lease", LEASE, "-n", ns)
    assert lease["spec"]["holderIdentity"] not in ("", leader_identity)
    assert lease["spec"]["leaseTransitions"] >= 1

    second.stop()
    assert holder() == "", "a clean stop releases the Lease for the next replica"
