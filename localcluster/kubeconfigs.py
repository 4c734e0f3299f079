"""Kubeconfig files for the local cluster's identities. Pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CLUSTER_NAME = "kuberank-local"


def render_kubeconfig(
    *, server: str, ca_cert: Path, client_cert: Path, client_key: Path, user: str
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user (client certificate) and a current context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority": str(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(client_cert), "client-key": str(client_key)},
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
