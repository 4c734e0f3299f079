"""charts/kuberank on the local control plane: strict server-side validation of every scenario,
`helm install` / `helm test` / `helm upgrade` / `helm uninstall`, the operator running with the
chart's ServiceAccount and nothing more, and least privilege proven with `kubectl auth can-i`.

One release serves the module's tests, in file order (install → use → upgrade → uninstall). Its
operator watches only the module's own namespace and uses its own tainted GPU nodes, so other
tests' RerankerDeployments are never touched.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster import LocalCluster, wait_until
from localcluster.nodes import NODE_POOL_LABEL
from localcluster.release.hookpods import HookRun, run_hook_pod
from localcluster.release.operating import HostOperator, start_host_operator

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kuberank"
CI_VALUES = CHART / "ci"
POOL_TAINT = "kuberank.dev/e2e-pool"
INSTANCE_LABEL = "app.kubernetes.io/instance"


@dataclass
class Release:
    """The module's release and the namespaces around it."""

    name: str
    namespace: str  # where the chart is installed
    apps: str  # the one namespace its operator watches
    other: str  # a namespace it must not touch
    install_output: str = ""
    pool: str = ""
    pool_nodes: list[str] = field(default_factory=list)
    operator: HostOperator | None = None

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}-kuberank"

    @property
    def fullname(self) -> str:
        return f"{self.name}-kuberank"


def objects_of(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


@pytest.fixture(scope="module")
def release(
    local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    suffix = secrets.token_hex(3)
    rel = Release(
        name=f"kr{suffix}", namespace=f"krc-{suffix}", apps=f"krc-{suffix}-apps",
        other=f"krc-{suffix}-other",
    )  # fmt: skip
    for namespace in (rel.namespace, rel.apps, rel.other):
        local_cluster.kubectl("create", "namespace", namespace)
    rel.pool = f"krc-{suffix}"
    rel.pool_nodes = local_cluster.add_gpu_nodes(1, prefix=rel.pool, gpus=2)
    local_cluster.kubectl("taint", "nodes", *rel.pool_nodes, f"{POOL_TAINT}={rel.pool}:NoSchedule")
    done = local_cluster.helm(
        "install", rel.name, str(CHART), "-n", rel.namespace,
        "--set", f"operator.watchNamespaces={{{rel.apps}}}",
        "--set", "alertWebhook.enabled=true",
        # The admin lets this module's RerankerDeployments mount their models from /m.
        "--set", "admission.allowedHostPathPrefixes={/m}",
        # No kubelet here: kwok leaves the test pod's status to the test, which runs it.
        "--set-string", r"tests.podAnnotations.kwok\.x-k8s\.io/status=custom",
        "--wait", "--timeout", "120s",
    )  # fmt: skip
    rel.install_output = done.stdout
    workdir = tmp_path_factory.mktemp("chart-operator")
    rel.operator = start_host_operator(
        local_cluster, namespace=rel.namespace, deployment=rel.fullname, workdir=workdir
    )
    try:
        yield rel
    finally:
        if rel.operator is not None:
            rel.operator.stop()
        local_cluster.helm("uninstall", rel.name, "-n", rel.namespace, "--wait", check=False)
        for namespace in (rel.namespace, rel.apps, rel.other):
            local_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        local_cluster.delete_nodes(rel.pool_nodes)


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scenario", ["default-values.yaml", "namespaced-values.yaml", "webhook-values.yaml"]
)
def test_rendered_chart_passes_strict_server_side_validation(
    local_cluster: LocalCluster, scenario: str
) -> None:
    suffix = secrets.token_hex(3)
    namespaces = [f"krv-{suffix}", f"krv-{suffix}-a", f"krv-{suffix}-b"]
    for namespace in namespaces:
        local_cluster.kubectl("create", "namespace", namespace)
    try:
        # As `helm install` does: the chart's CRDs first, then the templates.
        local_cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds")
        )
        rendered = local_cluster.helm(
            "template", f"krv{suffix}", str(CHART), "-n", namespaces[0],
            "--values", str(CI_VALUES / scenario),
            "--set", f"operator.watchNamespaces={{{namespaces[1]},{namespaces[2]}}}"
            if scenario == "namespaced-values.yaml" else "tests.enabled=true",
        ).stdout  # fmt: skip
        done = local_cluster.kubectl(
            "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=rendered,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr, done.stderr
        assert done.stdout.count("(server dry run)") == len(objects_of(rendered))
    finally:
        for namespace in namespaces:
            local_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_strict_validation_rejects_an_unknown_field(local_cluster: LocalCluster) -> None:
    # The check above can fail: a typo in a template is caught by the API server's schema.
    rendered = local_cluster.helm(
        "template", "krtypo", str(CHART), "-n", "default", "--show-only", "templates/service.yaml"
    ).stdout.replace("  type: ClusterIP", "  type: ClusterIP\n  sessionAfinity: None")
    done = local_cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=rendered, check=False
    )
    assert done.returncode != 0
    assert 'unknown field "spec.sessionAfinity"' in done.stderr


# -- install and use ------------------------------------------------------------------------------


def test_install_prints_notes_and_makes_the_operator_objects(
    local_cluster: LocalCluster, release: Release
) -> None:
    assert f"helm test {release.name} -n {release.namespace}" in release.install_output
    assert f"namespaces: {release.apps}" in release.install_output
    deployment = local_cluster.kubectl_json(
        "get", "deployment", release.fullname, "-n", release.namespace
    )
    assert deployment["status"]["readyReplicas"] == 1
    bindings = local_cluster.kubectl_json("get", "rolebindings", "-n", release.apps)["items"]
    assert [
        b["metadata"]["name"] for b in bindings if INSTANCE_LABEL in b["metadata"]["labels"]
    ] == [f"{release.fullname}-workloads"]
    crd = local_cluster.kubectl_json("get", "crd", "rerankerdeployments.kuberank.dev")
    assert any(
        c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"]
    )


def test_operator_with_the_chart_credentials_makes_a_rerankerdeployment_ready(
    local_cluster: LocalCluster, release: Release
) -> None:
    assert release.operator is not None
    rrd = {
        "apiVersion": "kuberank.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"name": "chart-check", "namespace": release.apps},
        "spec": {
            "model": {"id": "BAAI/bge-reranker-v2-m3", "source": {"hostPath": {"path": "/m"}}},
            "replicas": 2,
            "nodeSelector": {NODE_POOL_LABEL: release.pool},
            "tolerations": [{"key": POOL_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    local_cluster.kubectl("apply", "-f", "-", input=json.dumps(rrd))

    def ready() -> bool:
        status = local_cluster.kubectl_json("get", "rrd", "chart-check", "-n", release.apps).get(
            "status", {}
        )
        return status.get("readyReplicas") == 2 and any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )

    wait_until(
        ready,
        timeout=90,
        what=f"rrd chart-check Ready (operator log {release.operator.component.log})",
    )
    pods = local_cluster.kubectl_json("get", "pods", "-n", release.apps)["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(release.pool_nodes * 2)
    log = release.operator.component.log.read_text(errors="replace")
    assert "Forbidden" not in log
    assert " 403" not in log
    local_cluster.kubectl("delete", "rrd", "chart-check", "-n", release.apps, "--wait=true")


def _helm_test(
    local_cluster: LocalCluster, release: Release
) -> tuple[HookRun, subprocess.CompletedProcess[str]]:
    """`helm test`, with this process acting as the kubelet of the hook pod."""
    result: list[subprocess.CompletedProcess[str]] = []
    runner = threading.Thread(
        target=lambda: result.append(
            local_cluster.helm(
                "test", release.name, "-n", release.namespace, "--timeout", "90s", check=False
            )
        )
    )
    runner.start()
    pod = f"{release.fullname}-test-health"

    def scheduled() -> bool:
        done = local_cluster.kubectl(
            "get",
            "pod",
            pod,
            "-n",
            release.namespace,
            "-o",
            "jsonpath={.spec.nodeName}",
            check=False,
        )
        return done.returncode == 0 and bool(done.stdout)

    wait_until(scheduled, timeout=60, what=f"the helm test pod {pod}")
    run = run_hook_pod(local_cluster, namespace=release.namespace, name=pod, python=sys.executable)
    runner.join(timeout=120)
    assert result, "helm test did not return"
    return run, result[0]


def test_helm_test_passes_against_the_running_operator(
    local_cluster: LocalCluster, release: Release
) -> None:
    run, done = _helm_test(local_cluster, release)
    assert run.exit_code == 0, run
    assert run.argv[-1] == f"{release.operator.url}/readyz" if release.operator else False
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Phase:          Succeeded" in done.stdout


# -- least privilege ------------------------------------------------------------------------------


def can_i(cluster: LocalCluster, release: Release, *args: str) -> bool:
    done = cluster.kubectl("auth", "can-i", *args, f"--as={release.service_account}", check=False)
    assert done.stdout.strip() in {"yes", "no"}, done.stdout + done.stderr
    return done.stdout.strip() == "yes"


def test_operator_can_do_its_job(local_cluster: LocalCluster, release: Release) -> None:
    apps, ns = release.apps, release.namespace
    must = [
        ("watch", "rerankerdeployments.kuberank.dev", "-n", apps),
        ("patch", "rerankerdeployments.kuberank.dev", "--subresource=status", "-n", apps),
        ("patch", "rerankerdeployments.kuberank.dev", "--subresource=scale", "-n", apps),
        ("create", "deployments.apps", "-n", apps),
        ("patch", "services", "-n", apps),
        ("patch", "poddisruptionbudgets.policy", "-n", apps),
        ("delete", "pods", "-n", apps),
        ("create", "events", "-n", apps),
        ("list", "nodes"),
        ("get", f"secret/{release.fullname}-webhook", "-n", ns),
    ]
    missing = [" ".join(check) for check in must if not can_i(local_cluster, release, *check)]
    assert missing == []


def test_operator_can_do_nothing_more(local_cluster: LocalCluster, release: Release) -> None:
    apps, ns, other = release.apps, release.namespace, release.other
    must_not = [
        ("get", "secrets", "--all-namespaces"),
        ("list", "secrets", "-n", apps),
        ("get", "secrets/anything-else", "-n", ns),
        ("list", "secrets", "-n", ns),
        ("get", "configmaps", "-n", apps),
        ("create", "pods", "-n", apps),
        ("create", "pods/exec", "-n", apps),
        ("update", "rerankerdeployments.kuberank.dev", "-n", apps),
        ("delete", "rerankerdeployments.kuberank.dev", "-n", apps),
        ("delete", "deployments.apps", "-n", apps),
        ("create", "deployments.apps", "-n", other),
        ("list", "pods", "-n", other),
        ("watch", "rerankerdeployments.kuberank.dev", "--all-namespaces"),
        ("delete", "nodes"),
        ("patch", "nodes"),
        ("create", "clusterrolebindings"),
        ("create", "rolebindings", "-n", apps),
        ("create", "customresourcedefinitions"),
        ("impersonate", "serviceaccounts"),
        ("create", "serviceaccounts/token", "-n", ns),
    ]
    allowed = [" ".join(check) for check in must_not if can_i(local_cluster, release, *check)]
    assert allowed == []


# -- upgrade and uninstall ------------------------------------------------------------------------


def test_upgrade_changes_the_operator_and_keeps_the_webhook_token(
    local_cluster: LocalCluster, release: Release
) -> None:
    secret_name = f"{release.fullname}-webhook"
    before = local_cluster.kubectl_json("get", "secret", secret_name, "-n", release.namespace)
    local_cluster.helm(
        "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
        "--set", "operator.logLevel=debug", "--set", "operator.workers=2",
        "--wait", "--timeout", "120s",
    )  # fmt: skip
    history = json.loads(
        local_cluster.helm("history", release.name, "-n", release.namespace, "-o", "json").stdout
    )
    assert [h["status"] for h in history] == ["superseded", "deployed"]
    deployment = local_cluster.kubectl_json(
        "get", "deployment", release.fullname, "-n", release.namespace
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--log-level=debug" in args
    assert "--workers=2" in args
    after = local_cluster.kubectl_json("get", "secret", secret_name, "-n", release.namespace)
    assert after["data"] == before["data"]


def test_helm_test_fails_when_the_operator_is_down(
    local_cluster: LocalCluster, release: Release
) -> None:
    assert release.operator is not None
    release.operator.stop()
    release.operator = None
    run, done = _helm_test(local_cluster, release)
    assert run.exit_code != 0
    assert "Connection refused" in run.output
    assert done.returncode != 0
    assert "Phase:          Failed" in done.stdout


def test_uninstall_leaves_nothing_but_the_crd(
    local_cluster: LocalCluster, release: Release
) -> None:
    local_cluster.helm(
        "uninstall", release.name, "-n", release.namespace, "--wait", "--timeout", "120s"
    )
    kinds = local_cluster.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    namespaced = local_cluster.kubectl(
        "api-resources", "--verbs=list", "--namespaced=true", "-o", "name"
    ).stdout.split()
    left = local_cluster.kubectl(
        "get", ",".join(kinds), "-A", "-l", f"{INSTANCE_LABEL}={release.name}", "-o", "name",
        timeout=120,
    ).stdout.split()  # fmt: skip
    assert left == []
    in_namespace = local_cluster.kubectl(
        "get", ",".join(k for k in namespaced if k not in {"events", "events.events.k8s.io"}),
        "-n", release.namespace, "-o", "name", "--ignore-not-found", timeout=120,
    ).stdout.split()  # fmt: skip
    assert sorted(in_namespace) == ["configmap/kube-root-ca.crt", "serviceaccount/default"]
    # The CRD stays: deleting it would delete every RerankerDeployment in the cluster.
    local_cluster.kubectl("get", "crd", "rerankerdeployments.kuberank.dev")
