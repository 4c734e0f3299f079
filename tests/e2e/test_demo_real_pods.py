"""`make demo`'s step 8 (localcluster/release/realpods.py) on the session's cluster, which holds
the machine's real node: the chart with gpu.enabled=false, its operator a real pod from the
operator image, a CPU RerankerDeployment's real containers answering through its Service."""

from __future__ import annotations

import secrets

from localcluster import LocalCluster, realnode
from localcluster.release import realpods
from localcluster.release.demo import DOCUMENTS, QUERY
from tests.e2e.realnode_support import require_real_node


def test_the_demo_s_cpu_release_runs_on_real_containers(local_cluster: LocalCluster) -> None:
    node = require_real_node(local_cluster)
    assert realpods.unavailable(local_cluster.state_dir) is None
    suffix = secrets.token_hex(3)
    where = realpods.CpuRelease(
        release=f"krcpu{suffix}", namespace=f"krcpu-{suffix}", apps=f"krcpu-{suffix}-apps"
    )
    try:
        served = realpods.serve(
            local_cluster, node, local_cluster.state_dir, query=QUERY, documents=DOCUMENTS,
            progress=print, where=where,
        )  # fmt: skip
        # the memory document first, as on the demo's GPU example (the same MiniLM)
        assert served.ranking[0]["index"] == 0, served.ranking
        assert served.service_url.startswith("http://198.19.")
        for namespace, pod in (
            (where.namespace, served.operator_pod),
            (where.apps, served.inference_pod),
        ):
            body = local_cluster.kubectl_json("get", "pod", pod, "-n", namespace)
            assert body["spec"]["nodeName"] == realnode.NODE_NAME
            assert all(c["ready"] for c in body["status"]["containerStatuses"]), body["status"]
        rrd = local_cluster.kubectl_json("get", "rrd", where.name, "-n", where.apps)
        assert rrd["status"]["accelerator"] == "cpu"
    finally:
        local_cluster.kubectl(
            "delete", "rrd", where.name, "-n", where.apps, "--wait=true", check=False
        )
        local_cluster.helm("uninstall", where.release, "-n", where.namespace, "--wait", check=False)
        for namespace in (where.namespace, where.apps):
            local_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
