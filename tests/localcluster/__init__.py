"""The local control-plane harness: real etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kubectl built from Go modules, kwok for fake GPU nodes, helm.

Tests use the session fixture `local_cluster` (tests/e2e/conftest.py); people use
`make cluster-up` / `make cluster-down` (`python -m tests.localcluster up|down|status|demo`).
"""

from tests.localcluster.cluster import (
    ClusterCommandError,
    LocalCluster,
    running_cluster,
    stop_recorded,
    wait_until,
)
from tests.localcluster.processes import ComponentFailedError
from tests.localcluster.toolchain import ToolchainMissingError

__all__ = [
    "ClusterCommandError",
    "ComponentFailedError",
    "LocalCluster",
    "ToolchainMissingError",
    "running_cluster",
    "stop_recorded",
    "wait_until",
]
