"""The local control plane is real: the scheduler enforces GPU capacity, the garbage collector
deletes dependents, kubectl and helm talk to an authenticated API server, fake pods get
loopback IPs a test can serve on, and teardown leaves no process and no directory behind."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from localcluster import LocalCluster, wait_until
from localcluster.nodes import DEFAULT_POOL, GPU_RESOURCE, NODE_POOL_LABEL
from localcluster.processes import group_members
from localcluster.stages import CUSTOM_STATUS_ANNOTATION, CUSTOM_STATUS_VALUE
from localcluster.toolchain import REPO_ROOT, VERSIONS_FILE, parse_versions
from tests.e2e.subprocesses import localcluster_cli

MIG_RESOURCE = "nvidia.com/mig-1g.10gb"
H100_NODES = {"gpu-h100-0", "gpu-h100-1"}
MIG_NODE = "gpu-mig-0"
WAIT = 60.0


@pytest.fixture
def namespace(local_cluster: LocalCluster) -> Iterator[str]:
    name = f"harness-{secrets.token_hex(3)}"
    local_cluster.kubectl("create", "namespace", name)
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")


def _pods(cluster: LocalCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", selector
    )["items"]
    return items


def _pod(name: str, *, resources: dict[str, str], annotations: dict[str, str] | None = None,
         node_selector: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {
        "containers": [
            {"name": "main", "image": "registry.invalid/fake:1", "resources": {"limits": resources}}
        ]
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations or {}},
        "spec": spec,
    }


def _gpu_pods_on_shared_nodes(cluster: LocalCluster) -> list[str]:
    """namespace/name of every pod bound to a default H100 node that asks for GPUs."""
    pods = cluster.kubectl_json("get", "pods", "-A")["items"]
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in pods
        if p["spec"].get("nodeName") in H100_NODES
        and any(
            GPU_RESOURCE in ((c.get("resources") or {}).get("limits") or {})
            for c in p["spec"]["containers"]
        )
    ]


def _alive(pid: int) -> bool:
    # an exited orphan stays a zombie until init reaps it: that is gone, too
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _apply(cluster: LocalCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def _running_pod(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    def running() -> bool:
        pod = cluster.kubectl_json("get", "pod", name, "-n", namespace)
        return bool(pod["status"].get("phase") == "Running" and pod["status"].get("podIP"))

    wait_until(running, timeout=WAIT, what=f"pod {namespace}/{name} to run")
    result: dict[str, Any] = cluster.kubectl_json("get", "pod", name, "-n", namespace)
    return result


def test_version_endpoint_reports_the_pinned_release(local_cluster: LocalCluster) -> None:
    pinned = parse_versions(VERSIONS_FILE.read_text())["K8S_VERSION"]
    version = json.loads(local_cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == pinned
    assert (version["major"], version["minor"]) == ("1", pinned.split(".")[1])


def test_api_server_authenticates_clients_and_authorizes_with_rbac(
    local_cluster: LocalCluster,
) -> None:
    assert local_cluster.server.startswith("https://127.0.0.1:")
    whoami = local_cluster.kubectl_json("auth", "whoami")
    assert whoami["status"]["userInfo"]["username"] == "kuberank-admin"
    # no client certificate: anonymous, which RBAC does not let list nodes
    ca = yaml.safe_load(local_cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    context = ssl.create_default_context(cafile=ca["certificate-authority"])
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{local_cluster.server}/api/v1/nodes", context=context)
    denied.value.close()  # the error holds the open response
    assert denied.value.code == 403


def test_kubectl_lists_the_fake_gpu_nodes(local_cluster: LocalCluster) -> None:
    listing = local_cluster.kubectl_json("get", "nodes", "-l", f"{NODE_POOL_LABEL}={DEFAULT_POOL}")
    by_name = {n["metadata"]["name"]: n for n in listing["items"]}
    assert set(by_name) == H100_NODES | {MIG_NODE}
    for name in H100_NODES:
        node = by_name[name]
        assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert node["metadata"]["labels"]["nvidia.com/gpu.memory"] == "81559"
        assert node["metadata"]["labels"]["nvidia.com/gpu.count"] == "8"
    mig = by_name[MIG_NODE]
    assert mig["status"]["allocatable"][MIG_RESOURCE] == "7"
    assert GPU_RESOURCE not in mig["status"]["allocatable"]
    assert mig["metadata"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
    for node in by_name.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"


def test_helm_installs_a_chart_into_the_cluster(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    helm_version = parse_versions(VERSIONS_FILE.read_text())["HELM_VERSION"]
    assert local_cluster.helm("version", "--short").stdout.startswith(helm_version)
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "probe", "version": "0.1.0"})
    )
    (chart / "templates" / "configmap.yaml").write_text(
        textwrap.dedent("""\
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: {{ .Release.Name }}-probe
            data:
              kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
            """)
    )
    local_cluster.helm("install", "probe", str(chart), "-n", namespace, "--wait")
    releases = json.loads(local_cluster.helm("list", "-A", "-o", "json").stdout)
    assert {(r["name"], r["namespace"]) for r in releases} >= {("probe", namespace)}
    configmap = local_cluster.kubectl_json("get", "configmap", "probe-probe", "-n", namespace)
    # helm asked the API server for its version: the release templated what /version says
    assert configmap["data"]["kubeVersion"] == local_cluster.kubernetes_version
    local_cluster.helm("uninstall", "probe", "-n", namespace, "--wait")
    gone = local_cluster.kubectl("get", "configmap", "probe-probe", "-n", namespace, check=False)
    assert gone.returncode != 0


def test_scheduler_enforces_gpu_capacity_and_gc_deletes_the_pods(
    local_cluster: LocalCluster, namespace: str
) -> None:
    replicas = 17
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gpu-hungry"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "gpu-hungry"}},
            "template": {
                "metadata": {"labels": {"app": "gpu-hungry"}},
                "spec": _pod(
                    "x",
                    resources={GPU_RESOURCE: "1"},
                    node_selector={NODE_POOL_LABEL: DEFAULT_POOL},
                )["spec"],
            },
        },
    }
    holders = _gpu_pods_on_shared_nodes(local_cluster)
    assert not holders, f"other tests left pods holding the shared GPUs: {holders}"
    _apply(local_cluster, namespace, deployment)

    def settled() -> bool:
        pods = _pods(local_cluster, namespace, "app=gpu-hungry")
        phases = sorted(p["status"].get("phase", "") for p in pods)
        return phases == ["Pending"] + ["Running"] * (replicas - 1)

    wait_until(settled, timeout=WAIT, what="16 Running and 1 Pending gpu-hungry pods")
    pods = _pods(local_cluster, namespace, "app=gpu-hungry")
    running = [p for p in pods if p["status"]["phase"] == "Running"]
    per_node = {n: sum(p["spec"]["nodeName"] == n for p in running) for n in H100_NODES}
    assert per_node == dict.fromkeys(H100_NODES, 8)
    (pending,) = [p for p in pods if p["status"]["phase"] == "Pending"]
    assert "nodeName" not in pending["spec"]

    def failed_scheduling_names_gpu() -> bool:
        events = local_cluster.kubectl_json(
            "get", "events", "-n", namespace,
            "--field-selector", f"involvedObject.name={pending['metadata']['name']}",
        )["items"]  # fmt: skip
        return any(
            e["reason"] == "FailedScheduling" and f"Insufficient {GPU_RESOURCE}" in e["message"]
            for e in events
        )

    wait_until(failed_scheduling_names_gpu, timeout=WAIT, what="a FailedScheduling event")

    local_cluster.kubectl("delete", "deployment", "gpu-hungry", "-n", namespace, "--wait=true")
    wait_until(
        lambda: (
            not _pods(local_cluster, namespace, "app=gpu-hungry")
            and not local_cluster.kubectl_json("get", "replicasets", "-n", namespace)["items"]
        ),
        timeout=WAIT,
        what="the garbage collector to delete the ReplicaSet and its pods",
    )

    wait_until(
        lambda: not _gpu_pods_on_shared_nodes(local_cluster),
        timeout=WAIT,
        what="the shared GPU nodes to be free again",
    )


def test_mig_pod_lands_on_the_mig_node_only(local_cluster: LocalCluster, namespace: str) -> None:
    _apply(local_cluster, namespace, _pod("mig-user", resources={MIG_RESOURCE: "1"}))
    pod = _running_pod(local_cluster, namespace, "mig-user")
    assert pod["spec"]["nodeName"] == MIG_NODE
    local_cluster.kubectl("delete", "pod", "mig-user", "-n", namespace, "--wait=true")


def test_fake_pod_ip_is_a_loopback_address_a_test_can_serve_on(
    local_cluster: LocalCluster, namespace: str
) -> None:
    _apply(local_cluster, namespace, _pod("server", resources={}))
    pod = _running_pod(local_cluster, namespace, "server")
    ip = ipaddress.ip_address(pod["status"]["podIP"])
    assert ip.is_loopback
    assert ip in ipaddress.ip_network(local_cluster.pod_cidr)
    with socket.create_server((str(ip), 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection((str(ip), port), timeout=5) as client:
            accepted, _peer = server.accept()
            with accepted:
                client.sendall(b"ping")
                assert accepted.recv(4) == b"ping"
    local_cluster.kubectl("delete", "pod", "server", "-n", namespace, "--wait=true")


def test_custom_status_pods_keep_the_status_a_test_writes(
    local_cluster: LocalCluster, namespace: str
) -> None:
    custom = {CUSTOM_STATUS_ANNOTATION: CUSTOM_STATUS_VALUE}
    _apply(local_cluster, namespace, _pod("custom", resources={}, annotations=custom))
    wait_until(
        lambda: bool(
            local_cluster.kubectl_json("get", "pod", "custom", "-n", namespace)["spec"].get(
                "nodeName"
            )
        ),
        timeout=WAIT,
        what="the custom-status pod to be scheduled",
    )
    # a pod created after it runs: kwok has seen both, and left the custom one alone
    _apply(local_cluster, namespace, _pod("plain", resources={}))
    _running_pod(local_cluster, namespace, "plain")
    pod = local_cluster.kubectl_json("get", "pod", "custom", "-n", namespace)
    assert pod["status"]["phase"] == "Pending"
    assert "podIP" not in pod["status"]

    oom_killed = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "main",
                    "image": "registry.invalid/fake:1",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ],
        }
    }
    local_cluster.kubectl(
        "patch", "pod", "custom", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(oom_killed),
    )  # fmt: skip
    local_cluster.kubectl("delete", "pod", "plain", "-n", namespace, "--wait=true")
    pod = local_cluster.kubectl_json("get", "pod", "custom", "-n", namespace)
    (status,) = pod["status"]["containerStatuses"]
    assert status["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert status["restartCount"] == 3
    # deletion still completes for custom pods (no kubelet would otherwise finish it)
    local_cluster.kubectl("delete", "pod", "custom", "-n", namespace, "--wait=true", timeout=WAIT)


def test_add_gpu_nodes_makes_schedulable_nodes_and_delete_nodes_removes_them(
    local_cluster: LocalCluster, namespace: str
) -> None:
    names = local_cluster.add_gpu_nodes(2, prefix="harness-scale", gpus=4)
    assert names == ["harness-scale-0", "harness-scale-1"]
    try:
        pod = _pod(
            "scaled",
            resources={GPU_RESOURCE: "4"},
            node_selector={NODE_POOL_LABEL: "harness-scale"},
        )
        _apply(local_cluster, namespace, pod)
        assert _running_pod(local_cluster, namespace, "scaled")["spec"]["nodeName"] in names
        local_cluster.kubectl("delete", "pod", "scaled", "-n", namespace, "--wait=true")
    finally:
        local_cluster.delete_nodes(names)
    left = local_cluster.kubectl_json("get", "nodes", "-l", f"{NODE_POOL_LABEL}=harness-scale")
    assert left["items"] == []


_SECOND_CLUSTER = """
import json, sys, time
from localcluster import LocalCluster
cluster = LocalCluster.start(with_default_nodes=False)
print(json.dumps({"state_dir": str(cluster.state_dir), "server": cluster.server,
                  "pids": [c.pid for c in cluster.components]}), flush=True)
time.sleep(600)
"""


def test_a_second_cluster_runs_beside_and_sigterm_leaves_nothing_behind(
    local_cluster: LocalCluster,
) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", _SECOND_CLUSTER],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "KUBERANK_CLUSTER_LOGS"},
    )
    try:
        assert runner.stdout is not None
        line = runner.stdout.readline()
        assert line, f"second cluster failed to start: {runner.communicate(timeout=30)[1]}"
        second = json.loads(line)
        state_dir = Path(second["state_dir"])
        pids: list[int] = second["pids"]
        assert second["server"] != local_cluster.server
        assert len(pids) == 5
        assert all(psutil.pid_exists(pid) for pid in pids)
        assert state_dir.is_dir()

        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=60)
        assert runner.returncode != 0, "the runner was interrupted, not finished"
        assert "KeyboardInterrupt" in stderr
        wait_until(
            lambda: not any(psutil.pid_exists(pid) for pid in pids),
            timeout=10,
            what="the second cluster's processes to be reaped",
        )
        assert not any(group_members(pid) for pid in pids)
        assert not state_dir.exists()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    # the session's cluster never noticed
    assert local_cluster.kubectl("get", "--raw", "/readyz").stdout == "ok"


def test_cli_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"

    def cli(command: str) -> subprocess.CompletedProcess[str]:
        # the session's cluster holds the machine's one real node (tests/e2e/test_real_node.py)
        return localcluster_cli(command, state_dir=state_dir, real_node=False, timeout=180)

    try:
        up = cli("up")
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={state_dir / 'kubeconfig'}" in up.stdout
        pids = [
            c["pid"] for c in json.loads((state_dir / "cluster.json").read_text())["components"]
        ]
        assert len(pids) == 5
        # `up` has exited; the cluster keeps running for other shells
        status = cli("status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(" running") == 5
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert not state_dir.exists()
    wait_until(
        lambda: not any(_alive(pid) for pid in pids),
        timeout=10,
        what="the CLI cluster's processes to exit",
    )
    again = cli("down")
    assert again.returncode == 0
    assert "no local cluster was running" in again.stdout
    assert cli("status").returncode == 1
