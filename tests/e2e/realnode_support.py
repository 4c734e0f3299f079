"""Pods for the real node (localcluster/realnode.py): placed on it, restricted as the chart's pods
are, and waited for through the API."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from localcluster import LocalCluster, realnode, wait_until
from localcluster.nodeimages import NONROOT_UID, busybox_image, kuberank_image_archive

WAIT = 120.0

RESTRICTED_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": NONROOT_UID,
    "runAsGroup": NONROOT_UID,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def busybox() -> str:
    """The busybox image's name (imported into the real node when it starts)."""
    return busybox_image()[1]


def on_real_node(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A pod spec pinned to the real node, tolerating its taint."""
    return {
        **spec,
        "nodeSelector": {realnode.REAL_NODE_LABEL: "true"},
        "tolerations": [realnode.TOLERATION],
    }


def restricted_container(
    name: str, command: Sequence[str], *, image: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image or busybox(),
        "imagePullPolicy": "Never",
        "command": list(command),
        "securityContext": RESTRICTED_CONTEXT,
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"},
        },
        **extra,
    }


def pod_manifest(
    name: str, containers: Sequence[Mapping[str, Any]], *, labels: Mapping[str, str] | None = None,
    restart: str = "Never", volumes: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {"app": name})},
        "spec": on_real_node(
            {
                "restartPolicy": restart,
                "containers": list(containers),
                "volumes": list(volumes),
                "terminationGracePeriodSeconds": 2,
            }
        ),
    }


def apply(cluster: LocalCluster, namespace: str, manifest: Mapping[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def pod(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.kubectl_json("get", "pod", name, "-n", namespace)
    return found


def wait_phase(
    cluster: LocalCluster, namespace: str, name: str, phases: set[str], *, timeout: float = WAIT
) -> dict[str, Any]:
    def reached() -> bool:
        return pod(cluster, namespace, name)["status"].get("phase") in phases

    try:
        wait_until(reached, timeout=timeout, interval=0.5, what=f"pod {name} in {phases}")
    except TimeoutError as error:
        described = cluster.kubectl("describe", "pod", name, "-n", namespace, check=False)
        raise TimeoutError(f"{error}\n{described.stdout[-3000:]}") from None
    return pod(cluster, namespace, name)


def wait_ready(
    cluster: LocalCluster, namespace: str, name: str, *, timeout: float = WAIT
) -> dict[str, Any]:
    def ready() -> bool:
        conditions = pod(cluster, namespace, name)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    try:
        wait_until(ready, timeout=timeout, interval=0.5, what=f"pod {name} to be Ready")
    except TimeoutError as error:
        described = cluster.kubectl("describe", "pod", name, "-n", namespace, check=False)
        raise TimeoutError(f"{error}\n{described.stdout[-3000:]}") from None
    return pod(cluster, namespace, name)


@contextmanager
def scratch_namespace(cluster: LocalCluster, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


def import_image(node: realnode.RealNode, name: str) -> str:
    """Import kuberank's image `name` (`make images`) into the real node once; its name."""
    return node.ensure_image(kuberank_image_archive(name))


def real_node_unavailable() -> str | None:
    """Why the session cluster runs without the real node: skip (opted out) or fail (busy)."""
    if not realnode.enabled_by_env():
        return f"{realnode.ENABLE_ENV}=0: the session cluster runs without the real node"
    return realnode.busy()


def require_real_node(cluster: LocalCluster) -> realnode.RealNode:
    """The session cluster's real node (started again if a test stopped it); skips when
    KUBERANK_REAL_NODE=0, fails when another cluster holds the machine's real node."""
    if not realnode.enabled_by_env():
        pytest.skip(f"{realnode.ENABLE_ENV}=0: the session cluster runs without the real node")
    reason = realnode.busy(cluster.state_dir)
    if reason is not None:
        pytest.fail(reason)
    return cluster.start_real_node()
