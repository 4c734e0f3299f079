"""A RerankerDeployment as real containers on the real node: the operator (`--accelerator none`)
renders its pods, the kubelet runs the inference server (CPU, the packaged MiniLM from a
hostPath) and the sidecar (fake NVML) from the images `make images` built, readiness comes from
the real probes, and clients reach it through the Service (kube-proxy). runc enforces the
rendered securityContext; a rolling update under load loses no request; a memory limit too small
for the model gives a real OOMKilled, which the operator reports as Degraded."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from localcluster import LocalCluster, realnode, wait_until
from localcluster.nodeimages import NONROOT_UID
from localcluster.release import realpods
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.operator_support import (
    apply,
    condition,
    pods_of,
    ready_with,
    rrd_manifest,
    wait_for_state,
)
from tests.e2e.realnode_support import import_image, require_real_node

# torch on two shared cores: an image's first start on the node takes a while
START = 300.0
QUERY = "How do I stop a GPU reranker from running out of memory?"
DOCUMENTS = [
    "The Eiffel Tower is 330 metres tall and was completed in 1889.",
    "Keep a VRAM safety margin and cap the tokens per batch; restart pods that keep hitting "
    "CUDA out-of-memory errors.",
    "Sourdough needs a starter, flour, water and salt.",
]


@pytest.fixture(scope="module")
def node_with_images(local_cluster: LocalCluster) -> realnode.RealNode:
    """The real node with both of kuberank's images imported (the inference image once: 6 GB)."""
    node = require_real_node(local_cluster)
    for image in ("kuberank-operator", "kuberank-inference"):
        started = time.monotonic()
        name = import_image(node, image)
        print(f"{name} on the real node after {time.monotonic() - started:.0f}s")
    return node


@pytest.fixture(scope="module")
def host_model() -> Iterator[Path]:
    """The packaged MiniLM copied to a node directory the pods' non-root user can read."""
    root = Path(tempfile.mkdtemp(prefix="kuberank-models-"))
    yield realpods.model_directory(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cpu_operator(
    local_cluster: LocalCluster,
    rrd_namespace: str,
    operators: Callable[..., OperatorProcess],
    node_with_images: realnode.RealNode,
) -> str:
    """An operator watching a fresh namespace, rendering CPU pods; the namespace."""
    operators(rrd_namespace, extra_args=("--accelerator", "none"))
    return rrd_namespace


def wait_ready_replicas(cluster: LocalCluster, ns: str, name: str, replicas: int) -> None:
    try:
        wait_for_state(
            cluster, ns, name, ready_with(replicas), timeout=START,
            what=f"{name}: {replicas} real pods Ready",
        )  # fmt: skip
    except TimeoutError as error:
        described = cluster.kubectl("describe", "pods", "-n", ns, check=False).stdout
        raise TimeoutError(f"{error}\n{described[-4000:]}") from None


def rerank(session: requests.Session, url: str) -> list[int]:
    answer = session.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCUMENTS}, timeout=30)
    answer.raise_for_status()
    return [hit["index"] for hit in answer.json()]


def test_a_rerankerdeployment_runs_as_real_containers_behind_its_service(
    local_cluster: LocalCluster, cpu_operator: str, host_model: Path
) -> None:
    ns = cpu_operator
    apply(local_cluster, ns, rrd_manifest("real", realpods.cpu_spec(host_model)))
    wait_ready_replicas(local_cluster, ns, "real", 1)

    (pod,) = pods_of(local_cluster, ns, "real")
    assert pod["spec"]["nodeName"] == realnode.NODE_NAME
    statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
    assert statuses["inference"]["ready"]
    assert statuses["inference"]["started"]
    assert statuses["inference"]["image"].endswith("kuberank-inference:0.1.0")
    assert statuses["gpu-sidecar"]["image"].endswith("kuberank-operator:0.1.0")

    # a query through the Service's ClusterIP (kube-proxy's rules), not the pod's address
    with requests.Session() as session:
        assert rerank(session, realpods.service_url(local_cluster, ns, "real"))[0] == 1

    # the sidecar's telemetry names the pod it serves
    metrics = requests.get(f"http://{pod['status']['podIP']}:9400/metrics", timeout=10).text
    name = pod["metadata"]["name"]
    assert f'pod="{name}"' in metrics, metrics[:2000]
    assert f'namespace="{ns}"' in metrics

    # runc enforces the rendered securityContext: the non-root user, a read-only root
    probe = (
        "import os, sys\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n"
        "    open('/kuberank-probe', 'w')\n"
        "except OSError as error:\n"
        "    print('refused', error.errno)\n"
        "else:\n"
        "    print('written')\n"
    )
    executed = local_cluster.kubectl(
        "exec", name, "-n", ns, "-c", "inference", "--", "python3", "-c", probe
    ).stdout.split("\n")
    assert executed[0].split() == [str(NONROOT_UID), str(NONROOT_UID)]
    assert executed[1] == "refused 30", executed  # EROFS


@dataclass
class Load:
    """Clients sending reranks through the Service until stopped, each on its own keep-alive
    connection (requests.Session), as a search service's workers do."""

    url: str
    clients: int = 3
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    ranking = rerank(session, self.url)
                    failure = None if ranking[0] == 1 else f"wrong ranking {ranking}"
                except (requests.RequestException, ValueError) as error:
                    failure = repr(error)
                with self._lock:
                    self.sent += 1
                    if failure is not None:
                        self.failures.append(failure)


def _pod_images(cluster: LocalCluster, ns: str, name: str) -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in pods_of(cluster, ns, name)}


def test_a_rolling_update_under_load_loses_no_request(
    local_cluster: LocalCluster,
    cpu_operator: str,
    host_model: Path,
    node_with_images: realnode.RealNode,
) -> None:
    """A new image tag on a 2-replica resource, one pod at a time (maxUnavailable 1): the
    preStop sleep, the server's drain on SIGTERM and readiness keep every request answered."""
    ns = cpu_operator
    base = import_image(node_with_images, "kuberank-inference")
    repository, _, tag = base.rpartition(":")
    retagged = f"{tag}-rollout"
    node_with_images.ctr("images", "tag", "--force", base, f"{repository}:{retagged}")
    apply(local_cluster, ns, rrd_manifest("rolling", realpods.cpu_spec(host_model, replicas=2)))
    wait_ready_replicas(local_cluster, ns, "rolling", 2)
    url = realpods.service_url(local_cluster, ns, "rolling")

    with Load(url) as load:
        wait_until(lambda: load.sent >= 10, timeout=120, what="the clients' first answers")
        local_cluster.kubectl(
            "patch", "rrd", "rolling", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"image": {"tag": retagged}}}),
        )  # fmt: skip

        def rolled_out() -> bool:
            deployment = local_cluster.kubectl_json("get", "deployment", "rolling", "-n", ns)
            status = deployment.get("status") or {}
            return (
                status.get("observedGeneration") == deployment["metadata"]["generation"]
                and status.get("updatedReplicas") == 2
                and status.get("readyReplicas") == 2
                and status.get("replicas") == 2
                and _pod_images(local_cluster, ns, "rolling") == {f"{repository}:{retagged}"}
            )

        wait_until(rolled_out, timeout=2 * START, interval=1, what="the rolling update")
        before = load.sent
        wait_until(lambda: load.sent >= before + 10, timeout=60, what="answers after the update")
    print(f"rolling update under load: {load.sent} requests sent, {len(load.failures)} failed")
    assert load.failures == [], f"{len(load.failures)} of {load.sent} failed: {load.failures[:5]}"


def test_a_memory_limit_too_small_for_the_model_is_a_real_oomkill_and_degraded(
    local_cluster: LocalCluster, cpu_operator: str, host_model: Path
) -> None:
    ns = cpu_operator
    spec = realpods.cpu_spec(
        host_model,
        resources={"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"memory": "96Mi"}},
    )
    apply(local_cluster, ns, rrd_manifest("tight", spec))
    body = wait_for_state(
        local_cluster, ns, "tight",
        lambda b: condition(b, "Degraded").get("reason") == "OOMKilled",
        timeout=START, what="Degraded OOMKilled from the kubelet",
    )  # fmt: skip
    assert condition(body, "Degraded")["status"] == "True"
    assert condition(body, "Ready")["status"] == "False"
    (pod,) = pods_of(local_cluster, ns, "tight")
    statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
    inference = statuses["inference"]
    terminated = inference["lastState"].get("terminated") or inference["state"].get("terminated")
    assert terminated["reason"] == "OOMKilled", inference
    assert terminated["exitCode"] == 137
