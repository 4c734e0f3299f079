"""A kubeconfig that authenticates as a ServiceAccount, so a process on the host acts with
exactly the permissions the chart grants its operator (nothing from the admin's identity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from localcluster.release.clusters import Kube


def render_token_kubeconfig(
    *, cluster: dict[str, Any], token: str, namespace: str
) -> dict[str, Any]:
    """Pure: a kubeconfig for `cluster` (server and CA, as in the admin kubeconfig) and a token."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [
            {
                "name": "service-account",
                "context": {"cluster": "local", "user": "service-account", "namespace": namespace},
            }
        ],
        "current-context": "service-account",
    }


def service_account_kubeconfig(
    kube: Kube, *, namespace: str, name: str, path: Path, duration: str = "2h"
) -> Path:
    """Ask the API server for a token of ServiceAccount namespace/name (TokenRequest API) and
    write a kubeconfig that uses it."""
    token = kube.kubectl(
        "create", "token", name, "-n", namespace, f"--duration={duration}"
    ).stdout.strip()
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    config = render_token_kubeconfig(
        cluster=admin["clusters"][0]["cluster"], token=token, namespace=namespace
    )
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
