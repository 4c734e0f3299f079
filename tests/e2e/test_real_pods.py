"""kuberank's own images on the real node: the chart's operator Deployment runs its container
from the locally built image (`make images`), with its projected ServiceAccount token and the
chart's RBAC, and its readiness probe passes."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from localcluster import LocalCluster, realnode, wait_until
from localcluster.nodes import NODE_POOL_LABEL
from localcluster.toolchain import REPO_ROOT
from tests.e2e.realnode_support import WAIT, import_image, require_real_node, wait_ready
from tests.e2e.rerankers import EXAMPLES

CHART = REPO_ROOT / "charts" / "kuberank"
MODELS = "/var/lib/kuberank/models"  # where the example RerankerDeployment mounts its model from


@dataclass
class Release:
    name: str
    namespace: str
    apps: str
    image: str


@pytest.fixture(scope="module")
def operator_release(local_cluster: LocalCluster) -> Iterator[Release]:
    node = require_real_node(local_cluster)
    image = import_image(node, "kuberank-operator")
    repository, _, tag = image.rpartition(":")
    registry, _, repository = repository.partition("/")
    suffix = secrets.token_hex(3)
    rel = Release(name=f"kr{suffix}", namespace=f"krp-{suffix}", apps=f"krp-{suffix}-apps",
                  image=image)  # fmt: skip
    for namespace in (rel.namespace, rel.apps):
        local_cluster.kubectl("create", "namespace", namespace)
    key = realnode.REAL_NODE_LABEL.replace(".", r"\.")
    try:
        try:
            local_cluster.helm(
                "install", rel.name, str(CHART), "-n", rel.namespace,
                "--set", f"image.registry={registry}",
                "--set", f"image.repository={repository}",
                "--set-string", f"image.tag={tag}",
                "--set", "image.pullPolicy=Never",
                "--set", f"operator.watchNamespaces={{{rel.apps}}}",
                "--set-string", f"operator.nodeSelector.{key}=true",
                "--set", f"operator.tolerations[0].key={realnode.REAL_NODE_LABEL}",
                "--set", "operator.tolerations[0].operator=Exists",
                "--set", "operator.tolerations[0].effect=NoSchedule",
                "--set", f"admission.allowedHostPathPrefixes={{{MODELS}}}",
                "--set", f"admission.allowedImageRepositories={{{registry}/kuberank/}}",
                "--set", "tests.enabled=false",
                "--wait", "--timeout", "150s",
                timeout=200,
            )  # fmt: skip
        except Exception as error:
            logs = local_cluster.kubectl(
                "logs", "-n", rel.namespace, "-l", "app.kubernetes.io/component=operator",
                "--tail=40", "--previous", check=False,
            )  # fmt: skip
            raise AssertionError(
                f"helm install failed: {error}\noperator log:\n{logs.stdout}"
            ) from None
        yield rel
    finally:
        local_cluster.helm("uninstall", rel.name, "-n", rel.namespace, "--wait", check=False)
        for namespace in (rel.namespace, rel.apps):
            local_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _operator_pod(cluster: LocalCluster, rel: Release) -> dict[str, object]:
    pods = cluster.kubectl_json(
        "get", "pods", "-n", rel.namespace, "-l", "app.kubernetes.io/component=operator"
    )["items"]
    if not pods:
        pods = cluster.kubectl_json("get", "pods", "-n", rel.namespace)["items"]
    (pod,) = [p for p in pods if p["spec"]["containers"][0]["name"] == "operator"]
    found: dict[str, object] = pod
    return found


def test_the_chart_s_operator_runs_from_its_image_on_the_real_node(
    local_cluster: LocalCluster, operator_release: Release
) -> None:
    rel = operator_release
    pod = _operator_pod(local_cluster, rel)
    name = pod["metadata"]["name"]  # type: ignore[index]
    ready = wait_ready(local_cluster, rel.namespace, name)  # the readiness probe passed
    assert ready["spec"]["nodeName"] == realnode.NODE_NAME
    (status,) = ready["status"]["containerStatuses"]
    assert status["image"].endswith(rel.image.rpartition("/")[2])
    assert status["state"].get("running"), status
    # its API credentials are the projected ServiceAccount token, nothing else
    projected = [v for v in ready["spec"]["volumes"] if "projected" in v]
    assert any(
        "serviceAccountToken" in source
        for volume in projected
        for source in volume["projected"]["sources"]
    )
    logs = local_cluster.kubectl("logs", name, "-n", rel.namespace).stdout
    assert "kuberank operator started" in logs, logs[-2000:]


def test_the_operator_pod_reconciles_through_the_kubernetes_service_with_the_chart_s_rbac(
    local_cluster: LocalCluster, operator_release: Release
) -> None:
    """Its token and the chart's ClusterRoles reach the API through 198.19.0.1 (kube-proxy):
    it writes the status of a RerankerDeployment in the namespace it watches."""
    rel = operator_release
    body = yaml.safe_load((EXAMPLES / "gpu.yaml").read_text())
    name = body["metadata"]["name"]
    # its pods stay Pending (no node has this pool): the status is what the test reads
    body["spec"]["nodeSelector"] = {NODE_POOL_LABEL: f"{rel.name}-nowhere"}
    for tuning in ("powerLimitWatts", "lockedClocks"):  # not allowed in this namespace
        body["spec"]["gpu"].pop(tuning, None)
    local_cluster.kubectl("apply", "-n", rel.apps, "-f", "-", input=json.dumps(body))

    def reconciled() -> bool:
        body = local_cluster.kubectl_json("get", "rrd", name, "-n", rel.apps)
        return bool((body.get("status") or {}).get("conditions"))

    try:
        wait_until(reconciled, timeout=WAIT, what=f"the operator pod to reconcile {name}")
    except TimeoutError as error:
        pod = _operator_pod(local_cluster, rel)["metadata"]["name"]  # type: ignore[index]
        logs = local_cluster.kubectl("logs", pod, "-n", rel.namespace, check=False).stdout
        raise TimeoutError(f"{error}; operator log:\n{logs[-3000:]}") from None
    managers = {
        entry["manager"]
        for entry in local_cluster.kubectl_json(
            "get", "rrd", name, "-n", rel.apps, "--show-managed-fields"
        )["metadata"]["managedFields"]
    }
    assert managers, "the operator wrote through the API"
    local_cluster.kubectl("delete", "rrd", name, "-n", rel.apps, "--wait=true")
