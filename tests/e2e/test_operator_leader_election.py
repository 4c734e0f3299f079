"""Two operator replicas: only the holder of the Lease acts; when it is killed the standby
takes over and carries on; a clean stop hands the Lease back at once."""

from __future__ import annotations

from collections.abc import Callable

from localcluster import LocalCluster, wait_until
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.operator_support import (
    GpuPool,
    apply,
    minimal_spec,
    ready_with,
    rrd_manifest,
    wait_for_state,
)

LEASE = "kuberank-operator"


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

    first = operators(ns, extra_args=election)
    wait_until(lambda: "leading: this replica holds" in first.logs(), timeout=60, what="a leader")
    leader_identity = holder()
    second = operators(ns, extra_args=election)
    apply(local_cluster, ns, rrd_manifest("ranker", minimal_spec(replicas=1, **pool.placement)))
    wait_for_state(local_cluster, ns, "ranker", ready_with(1), what="Ready under the leader")
    assert "created Deployment ranker" in first.logs()
    assert "leading" not in second.logs()
    assert "created" not in second.logs(), "a standby must not act"

    first.kill()
    local_cluster.kubectl("scale", "rrd", "ranker", "--replicas=2", "-n", ns)
    wait_for_state(local_cluster, ns, "ranker", ready_with(2), what="Ready under the new leader")
    assert "leading: this replica holds" in second.logs()
    assert "scaled Deployment ranker from 1 to 2 pods" in second.logs()
    lease = local_cluster.kubectl_json("get", "lease", LEASE, "-n", ns)
    assert lease["spec"]["holderIdentity"] not in ("", leader_identity)
    assert lease["spec"]["leaseTransitions"] >= 1

    second.stop()
    assert holder() == "", "a clean stop releases the Lease for the next replica"
