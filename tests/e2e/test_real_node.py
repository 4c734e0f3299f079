"""The real node: a kubelet with containerd, runc and the CNI bridge registers beside the kwok
nodes, runs restricted pods from an image made here, serves their logs, kube-proxy routes a
ClusterIP to them, and stopping a cluster (also one that was killed) leaves nothing on the host."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from localcluster import LocalCluster, hostnetwork, realnode, wait_until
from localcluster.nodes import GPU_RESOURCE, NODE_POOL_LABEL
from localcluster.toolchain import REPO_ROOT
from tests.e2e.realnode_support import (
    WAIT,
    apply,
    pod,
    pod_manifest,
    restricted_container,
    scratch_namespace,
    wait_phase,
    wait_ready,
)
from tests.e2e.subprocesses import localcluster_cli

NOTHING_LEFT: dict[str, list[str]] = {
    "processes": [],
    "mounts": [],
    "state": [],
    "shims": [],
    "links": [],
    "iptables chains": [],
    "kubepods cgroups": [],
    "netns": [],
}
# what belongs to one node alone (the host's interfaces, chains, cgroups are the next node's)
OWN = ("processes", "mounts", "state")


def test_the_real_node_is_ready_with_its_labels_taint_and_gpus(
    local_cluster: LocalCluster, real_node: realnode.RealNode
) -> None:
    node = local_cluster.kubectl_json("get", "node", real_node.name)
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True", ready
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == local_cluster.kubernetes_version
    assert info["containerRuntimeVersion"].startswith("containerd://")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == hostnetwork.NODE_IP
    labels = node["metadata"]["labels"]
    assert labels[realnode.REAL_NODE_LABEL] == "true"
    assert labels[NODE_POOL_LABEL] == realnode.REAL_NODE_POOL
    assert realnode.TAINT in node["spec"]["taints"]
    assert node["status"]["allocatable"][GPU_RESOURCE] == str(realnode.NODE_GPUS)
    # the kwok nodes are still there, and still the only ones in the default pool
    pools = local_cluster.kubectl_json("get", "nodes", "-l", f"{NODE_POOL_LABEL}=default")
    assert real_node.name not in {n["metadata"]["name"] for n in pools["items"]}


def test_a_pod_that_does_not_tolerate_the_taint_never_lands_on_the_real_node(
    local_cluster: LocalCluster, real_node: realnode.RealNode
) -> None:
    with scratch_namespace(local_cluster, "real-taint") as namespace:
        manifest = pod_manifest("untolerated", [restricted_container("main", ["true"])])
        del manifest["spec"]["tolerations"]
        apply(local_cluster, namespace, manifest)

        def unschedulable() -> bool:
            conditions = pod(local_cluster, namespace, "untolerated")["status"].get(
                "conditions", []
            )
            return any(
                c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                for c in conditions
            )

        wait_until(unschedulable, timeout=WAIT, what="the scheduler to refuse the pod")
        assert "nodeName" not in pod(local_cluster, namespace, "untolerated")["spec"]


def test_a_restricted_pod_runs_to_completion_and_kubectl_logs_shows_its_output(
    local_cluster: LocalCluster, real_node: realnode.RealNode
) -> None:
    script = (
        "echo uid=$(id -u) gid=$(id -g); "
        "if touch /written 2>/dev/null; then echo root-writable; else echo root-read-only; fi; "
        "echo $(grep CapEff /proc/self/status); "
        "echo memory-limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
    )
    with scratch_namespace(local_cluster, "real-pod") as namespace:
        apply(
            local_cluster,
            namespace,
            pod_manifest("restricted", [restricted_container("main", ["sh", "-c", script])]),
        )
        done = wait_phase(local_cluster, namespace, "restricted", {"Succeeded", "Failed"})
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["spec"]["nodeName"] == real_node.name
        assert ipaddress.ip_address(done["status"]["podIP"]) in ipaddress.ip_network(
            hostnetwork.POD_CIDR
        )
        logs = local_cluster.kubectl("logs", "restricted", "-n", namespace).stdout.split("\n")
        assert "uid=65532 gid=65532" in logs
        assert "root-read-only" in logs
        assert "CapEff: 0000000000000000" in logs
        assert f"memory-limit={64 * 1024 * 1024}" in logs


def test_a_cluster_ip_service_reaches_a_pod_through_kube_proxy(
    local_cluster: LocalCluster, real_node: realnode.RealNode
) -> None:
    serve = "echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"
    server = restricted_container(
        "httpd",
        ["sh", "-c", serve],
        ports=[{"containerPort": 8080}],
        readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        volumeMounts=[{"name": "www", "mountPath": "/www"}],
    )
    with scratch_namespace(local_cluster, "real-svc") as namespace:
        apply(
            local_cluster,
            namespace,
            pod_manifest(
                "web", [server], restart="Always", volumes=[{"name": "www", "emptyDir": {}}]
            ),
        )
        service: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
        apply(local_cluster, namespace, service)
        wait_ready(local_cluster, namespace, "web")
        cluster_ip = local_cluster.kubectl_json("get", "service", "web", "-n", namespace)["spec"][
            "clusterIP"
        ]
        assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(hostnetwork.SERVICE_CIDR)
        answers: list[str] = []

        def answered() -> bool:
            try:
                with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=2) as response:
                    answers.append(response.read().decode().strip())
                    return True
            except OSError:
                return False  # kube-proxy has not programmed the Service yet

        wait_until(answered, timeout=WAIT, what=f"the Service {cluster_ip}:80 to answer")
        assert answers[-1] == "served-by-web"


# -- stopping leaves nothing ---------------------------------------------------------------


def _alive(pid: int) -> bool:
    # an orphan that exited stays a zombie until init reaps it: that is gone, too
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kubectl(state_dir: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(state_dir / "bin" / "kubectl"), f"--kubeconfig={state_dir / 'kubeconfig'}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def _run_a_pod_with_volumes(state_dir: Path) -> None:
    """A running pod: a sandbox (shm, netns), an overlay rootfs, a projected token, a veth."""
    manifest = pod_manifest(
        "sleeper",
        [
            restricted_container(
                "main",
                ["sleep", "3600"],
                volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
            )
        ],
        volumes=[{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
    )
    _kubectl(state_dir, "apply", "-f", "-", stdin=json.dumps(manifest))

    def running() -> bool:
        found = json.loads(_kubectl(state_dir, "get", "pod", "sleeper", "-o", "json"))
        return bool(found["status"].get("phase") == "Running")

    wait_until(running, timeout=WAIT, interval=0.5, what="the sleeper pod to run")


def _assert_something_to_clean(state_dir: Path) -> None:
    left = realnode.leftovers(state_dir)
    assert left["mounts"], "a running pod mounts its rootfs, shm and volumes"
    assert left["processes"], "a running pod has a shim and a container"
    assert hostnetwork.BRIDGE in left["links"]
    assert left["iptables chains"], "kube-proxy's chains"


def _assert_nothing_left(state_dir: Path) -> None:
    assert realnode.leftovers(state_dir) == NOTHING_LEFT
    assert not realnode.OWNER_FILE.exists()


def test_down_stops_a_cluster_with_a_real_node_and_leaves_nothing(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    local_cluster.stop_real_node()  # the machine has one real node: lend it to `up`
    _assert_nothing_left(local_cluster.state_dir)
    state_dir = tmp_path / "cluster"
    try:
        up = localcluster_cli("up", state_dir=state_dir, real_node=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "real-0" in up.stdout  # `up` shows the node
        _run_a_pod_with_volumes(state_dir)
        _assert_something_to_clean(state_dir)
    finally:
        down = localcluster_cli("down", state_dir=state_dir, real_node=True, timeout=300)
    assert down.returncode == 0, down.stderr
    _assert_nothing_left(state_dir)
    assert not state_dir.exists()


_ATTACHED_CLUSTER = """
import json, sys, time
from localcluster import LocalCluster
cluster = LocalCluster.start(with_default_nodes=False, real_node=True)
print(json.dumps({"state_dir": str(cluster.state_dir)}), flush=True)
time.sleep(600)
"""


def test_a_killed_cluster_s_real_node_is_swept_by_the_next_start(
    local_cluster: LocalCluster,
) -> None:
    local_cluster.stop_real_node()
    env = {k: v for k, v in os.environ.items() if k != "KUBERANK_CLUSTER_LOGS"}
    runner = subprocess.Popen(
        [sys.executable, "-c", _ATTACHED_CLUSTER],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    state_dir = Path("/nonexistent")
    try:
        assert runner.stdout is not None
        line = runner.stdout.readline()
        assert line, f"the cluster failed to start: {runner.communicate(timeout=30)[1]}"
        state_dir = Path(json.loads(line)["state_dir"])
        _run_a_pod_with_volumes(state_dir)
        _assert_something_to_clean(state_dir)
        # killed outright: no exit handler runs; the kubelet and containerd die with it
        # (PR_SET_PDEATHSIG), the shims, containers, mounts, links and chains stay
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
        recorded = json.loads((state_dir / "cluster.json").read_text())["components"]
        wait_until(
            lambda: not any(_alive(c["pid"]) for c in recorded),
            timeout=60,
            what="the killed cluster's components to exit",
        )
        assert realnode.leftovers(state_dir)["mounts"], "the kill left the pod's mounts"
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.communicate(timeout=30)  # reaps it and closes its pipes
    # the next cluster to start the real node (here the session's) sweeps the dead one's
    local_cluster.start_real_node()
    left = realnode.leftovers(state_dir)
    assert {k: left[k] for k in OWN} == {k: [] for k in OWN}
    assert left["shims"] == []  # the dead node's pod is gone, and the new node runs none yet
    assert realnode.OWNER_FILE.exists()  # now the session's
    shutil.rmtree(state_dir)  # the rest of the killed cluster's state (its etcd, logs)


@pytest.fixture(autouse=True, scope="module")
def _session_node_back(local_cluster: LocalCluster) -> Any:
    """The tests that lend the real node away give it back to the session's cluster."""
    yield
    if realnode.enabled_by_env():
        local_cluster.start_real_node()
