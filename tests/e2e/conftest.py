"""The e2e session's local control plane (see localcluster).

`local_cluster` starts once per session: real etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok with three fake GPU nodes (gpu-h100-0/1: 8 × nvidia.com/gpu each;
gpu-mig-0: 7 × nvidia.com/mig-1g.10gb). Tests that consume GPUs should add their own nodes
(`local_cluster.add_gpu_nodes(..., prefix="mytest")`, selected by kuberank.dev/node-pool=mytest)
and delete what they create. Set KUBERANK_CLUSTER_LOGS=DIR to keep the components' logs.

Beside them runs the real node `real-0` (kubelet + containerd, localcluster/realnode.py), tainted
so that only pods tolerating kuberank.dev/real-node land there; the `real_node` fixture hands it
to tests. KUBERANK_REAL_NODE=0 starts the session without it (hosts without root), and the tests
that need it skip, saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import LocalCluster, realnode, running_cluster
from tests.e2e.operator_support import gpu_pools, operators, rrd_crd, rrd_namespace
from tests.e2e.realnode_support import real_node_unavailable, require_real_node

# the operator tests' fixtures, registered for every e2e module
__all__ = ["gpu_pools", "operators", "rrd_crd", "rrd_namespace"]

_E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # every test under tests/e2e needs the control plane: mark it so `-m "not e2e"` skips it
    for item in items:
        if _E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """A running local cluster shared by the session; stopped (no process, no files) after."""
    # another live cluster holding the machine's one real node fails the real-node tests
    # (real_node_unavailable says why), not the whole session
    with running_cluster(real_node=real_node_unavailable() is None) as cluster:
        yield cluster


@pytest.fixture
def real_node(local_cluster: LocalCluster) -> realnode.RealNode:
    """The session cluster's real node (started again if a test stopped it)."""
    return require_real_node(local_cluster)
