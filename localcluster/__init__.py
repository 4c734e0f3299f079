"""The local control plane: real etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kubectl built from Go modules, kwok for fake GPU nodes, helm. Development tooling, not part of
the distribution: run it from the repository root.

People use `make cluster-up` / `make cluster-down` / `make demo`
(`python -m localcluster up|down|status|demo`; the demo's story is `localcluster.release`); the
e2e suite uses the session fixture `local_cluster` (tests/e2e/conftest.py), benchmarks
`running_cluster()`.
"""

from localcluster.cluster import (
    ClusterCommandError,
    LocalCluster,
    running_cluster,
    stop_recorded,
    wait_until,
)
from localcluster.processes import ComponentFailedError
from localcluster.toolchain import ToolchainMissingError

__all__ = [
    "ClusterCommandError",
    "ComponentFailedError",
    "LocalCluster",
    "ToolchainMissingError",
    "running_cluster",
    "stop_recorded",
    "wait_until",
]
