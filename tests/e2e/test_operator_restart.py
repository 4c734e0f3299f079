"""The operator is safe to kill: killed mid-reconcile (SIGKILL) and started again it converges
without duplicate objects; deleting a RerankerDeployment removes everything it made."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

from localcluster import LocalCluster, wait_until
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.operator_support import (
    GpuPool,
    apply,
    events_of,
    minimal_spec,
    owned_objects,
    pods_of,
    ready_with,
    rrd_manifest,
    wait_for_state,
)

NAMES = [f"ranker-{i}" for i in range(6)]


def test_killed_mid_reconcile_converges_without_duplicates(
    local_cluster: LocalCluster,
    rrd_namespace: str,
    gpu_pools: Callable[..., GpuPool],
    operators: Callable[..., OperatorProcess],
) -> None:
    ns = rrd_namespace
    pool = gpu_pools(2, gpus=8)
    # One worker and one API thread: slow enough that the kill lands inside a reconcile.
    first = operators(ns, extra_args=("--workers", "1", "--api-threads", "1"))
    batch = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [rrd_manifest(n, minimal_spec(replicas=1, **pool.placement)) for n in NAMES],
    }
    local_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(batch))
    # Kill it the moment it reports its first object, before it can finish the others.
    wait_until(
        lambda: "created Deployment" in first.logs(),
        timeout=60,
        what="the operator's first Deployment",
        interval=0.01,
    )
    first.kill()
    made_before = owned_objects(local_cluster, ns)
    # While it is down, a user scales one of them: the new operator must pick that up too.
    local_cluster.kubectl("scale", "rrd", NAMES[0], "--replicas=2", "-n", ns)

    second = operators(ns)
    for name in NAMES:
        want = 2 if name == NAMES[0] else 1
        wait_for_state(local_cluster, ns, name, ready_with(want), what=f"{name} Ready")
        assert len(pods_of(local_cluster, ns, name)) == want

    objects = owned_objects(local_cluster, ns)
    assert objects["deployments"] == sorted(NAMES)
    assert objects["services"] == sorted(NAMES)
    assert objects["poddisruptionbudgets"] == sorted(NAMES)
    # One ReplicaSet per Deployment: re-applying the same spec never rolled the pods.
    owners = Counter(rs.rsplit("-", 1)[0] for rs in objects["replicasets"])
    assert owners == Counter(NAMES), objects["replicasets"]
    created = Counter(
        e["message"]
        for name in NAMES
        for e in events_of(local_cluster, ns, name)
        if e["reason"] == "Created"
    )
    assert all(count == 1 for count in created.values()), created
    # The kill may fall between an apply and its Event (one worker: one such gap at most).
    assert len(created) >= 3 * len(NAMES) - 1, created
    made = sum(len(made_before[k]) for k in ("deployments", "services", "poddisruptionbudgets"))
    assert made < 3 * len(NAMES), "the kill came too late to interrupt anything"
    assert "Traceback" not in second.logs()


def test_deleting_the_resource_removes_everything_it_made(
    local_cluster: LocalCluster,
    rrd_namespace: str,
    gpu_pools: Callable[..., GpuPool],
    operators: Callable[..., OperatorProcess],
) -> None:
    ns = rrd_namespace
    pool = gpu_pools(1, gpus=4)
    operators(ns)
    for name in ("doomed", "kept"):
        apply(local_cluster, ns, rrd_manifest(name, minimal_spec(replicas=2, **pool.placement)))
    for name in ("doomed", "kept"):
        wait_for_state(local_cluster, ns, name, ready_with(2), what=f"{name} Ready")

    local_cluster.kubectl("delete", "rrd", "doomed", "-n", ns, "--wait=true", timeout=60)

    def doomed_gone() -> bool:
        objects = owned_objects(local_cluster, ns)
        leftovers = [n for names in objects.values() for n in names if n.startswith("doomed")]
        return not leftovers and not pods_of(local_cluster, ns, "doomed")

    wait_until(doomed_gone, timeout=90, what="garbage collection of everything doomed owned")
    objects = owned_objects(local_cluster, ns)
    assert objects["deployments"] == ["kept"]
    assert objects["services"] == ["kept"]
    assert objects["poddisruptionbudgets"] == ["kept"]
    assert len(pods_of(local_cluster, ns, "kept")) == 2
    # No finalizer was ever needed: the CR carries none, so deletion works with no operator.
    kept = local_cluster.kubectl_json("get", "rrd", "kept", "-n", ns)
    assert not kept["metadata"].get("finalizers")
