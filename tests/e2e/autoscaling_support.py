"""Real parts for the autoscaling e2e tests: the operator process, an inference server and a GPU
sidecar (fake NVML backend) bound to each kwok pod's loopback IP, a load generator,
Prometheus and Debian's Alertmanager. Prometheus finds the pods either through kubernetes_sd
against the local API server as a least-privilege ServiceAccount (the Go-built Prometheus 3.x:
Debian's 2.42 lacks kubernetes_sd) or through the operator's HTTP service discovery
(`GET /targets`, Debian's Prometheus).

Everything listens on loopback; every process is started here and stopped by its own handle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.model.policies import oom_policy, scale_policy
from kuberank_operator.rendering.alertrules import render_prometheus_rule, thresholds_from_policies
from tests.localcluster import LocalCluster, wait_until
from tests.localcluster.cluster import free_ports
from tests.localcluster.nodes import NODE_POOL_LABEL
from tests.localcluster.toolchain import prometheus_binary

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "rerankerdeployments.kuberank.dev.yaml"
BIN = Path(sys.executable).parent
OWNER_LABEL = "kuberank.dev/rerankerdeployment"
INFERENCE_PORT = 8080
SIDECAR_PORT = 9400
# Child processes share two cores with the whole suite: one torch thread each.
QUIET_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One HTTP request on loopback; (status, parsed JSON body or text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def install_crd(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))

    def established() -> bool:
        crd = cluster.kubectl_json("get", "crd", "rerankerdeployments.kuberank.dev")
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, timeout=60, what="the RerankerDeployment CRD to be established")


def spawn(
    args: list[str], *, log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child process writing stdout and stderr to `log` (the parent keeps no handle)."""
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 10) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@dataclass
class Namespace:
    """A namespace with its own GPU node pool, removed afterwards."""

    cluster: LocalCluster
    name: str
    pool: str
    nodes: list[str] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def create(cls, cluster: LocalCluster, prefix: str) -> Iterator[Namespace]:
        suffix = secrets.token_hex(3)
        ns = cls(cluster=cluster, name=f"{prefix}-{suffix}", pool=f"{prefix}-{suffix}")
        cluster.kubectl("create", "namespace", ns.name)
        ns.nodes = cluster.add_gpu_nodes(1, prefix=ns.pool, gpus=4)
        try:
            yield ns
        finally:
            cluster.kubectl("delete", "namespace", ns.name, "--wait=false", check=False)
            cluster.delete_nodes(ns.nodes)

    def apply(self, manifest: Mapping[str, Any]) -> None:
        self.cluster.kubectl("apply", "-n", self.name, "-f", "-", input=json.dumps(manifest))

    def rrd(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.cluster.kubectl_json("get", "rrd", name, "-n", self.name)
        return body

    def replicas(self, name: str) -> int:
        return int(self.rrd(name)["spec"]["replicas"])

    def events(self, reason: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.kubectl_json(
            "get", "events", "-n", self.name, "--field-selector", f"reason={reason}"
        )["items"]
        return items

    def pods(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.kubectl_json(
            "get", "pods", "-n", self.name, "-l", f"{OWNER_LABEL}={name}"
        )["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def reranker(
    name: str,
    *,
    pool: str,
    autoscaling: Mapping[str, Any],
    oom: Mapping[str, Any] | None = None,
    monitoring: Mapping[str, Any] | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    """A RerankerDeployment on the namespace's own node pool."""
    spec: dict[str, Any] = {
        "model": {
            "id": "sentence-transformers/all-MiniLM-L6-v2",
            "task": "embed",
            "maxLength": 256,
            "source": {"hostPath": {"path": "/var/lib/kuberank/models/minilm"}},
        },
        "replicas": replicas,
        "gpu": {"resourceName": "nvidia.com/gpu"},
        "batching": {"maxBatchTokens": 4096},
        "nodeSelector": {NODE_POOL_LABEL: pool},
        "autoscaling": dict(autoscaling),
    }
    if oom is not None:
        spec["oom"] = dict(oom)
    if monitoring is not None:
        spec["monitoring"] = dict(monitoring)
    return {
        "apiVersion": "kuberank.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def operator_rules_yaml(manifest: Mapping[str, Any], namespace: str) -> str:
    """The rule groups of the PrometheusRule the operator renders for this resource, as a
    rules file Prometheus loads (tests and benchmarks run without the Prometheus Operator)."""
    spec = parse_spec(manifest["spec"])
    owner = {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "metadata": {"name": manifest["metadata"]["name"], "namespace": namespace, "uid": "-"},
    }
    rule = render_prometheus_rule(
        owner=owner,
        thresholds=thresholds_from_policies(
            scale=scale_policy(spec.autoscaling),
            oom=oom_policy(spec.oom),
            interval_s=spec.autoscaling.interval_seconds,
        ),
        labels={},
    )
    return yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False)


class OperatorProcess:
    """kuberank-operator as a process, watching one namespace."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        namespace: str,
        log_path: Path,
        builtin: bool = True,
        webhook_secret: str | None = None,
    ) -> None:
        self.metrics_port, self.webhook_port = free_ports(2)
        args = [
            str(BIN / "kuberank-operator"),
            "--kubeconfig", str(cluster.kubeconfig),
            "--namespaces", namespace,
            "--metrics-host", "127.0.0.1",
            "--metrics-port", str(self.metrics_port),
            "--log-format", "text",
            "--builtin-evaluator", "true" if builtin else "false",
        ]  # fmt: skip
        if webhook_secret is not None:
            args += [
                "--alert-webhook", "true",
                "--alert-webhook-host", "127.0.0.1",
                "--alert-webhook-port", str(self.webhook_port),
                "--alert-webhook-token-secret", f"{namespace}/{webhook_secret}",
            ]  # fmt: skip
        self.log_path = log_path
        self.process = spawn(args, log=log_path, env={**os.environ, **cluster.env(), **QUIET_ENV})

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/alerts"

    @property
    def targets_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/targets"

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                return http_json("GET", f"http://127.0.0.1:{self.metrics_port}/readyz")[0] == 200
            return False

        wait_until(ready, timeout=timeout, what="the operator to be ready", interval=0.5)

    def metric(self, name: str) -> float:
        """Sum of one metric family's samples on the operator's /metrics."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class PodProcesses:
    pod: str
    ip: str
    inference: subprocess.Popen[bytes] | None
    sidecar: subprocess.Popen[bytes]
    state_file: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.ip}:{INFERENCE_PORT}"

    def ready(self) -> bool:
        with contextlib.suppress(OSError):
            return http_json("GET", f"{self.base_url}/ready", timeout=2)[0] == 200
        return False

    def sidecar_up(self) -> bool:
        with contextlib.suppress(OSError):
            url = f"http://{self.ip}:{SIDECAR_PORT}/metrics"
            return http_json("GET", url, timeout=2)[0] == 200
        return False

    def set_gpu(self, **values: Any) -> None:
        """Override the fake GPU's readings (utilization, fb_used_mib, xid_events, ...)."""
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gpus": {"0": values}}))
        tmp.replace(self.state_file)


class PodServers:
    """Runs a real inference server and GPU sidecar on the IP of every running pod of one
    RerankerDeployment, and stops them when the pod goes; a background thread follows pods."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        namespace: str,
        name: str,
        workdir: Path,
        inference: bool = True,
        sidecar_interval: float = 1.0,
        sidecar_args: Sequence[str] = (),
        fake_profile: str = "h100x1",
    ) -> None:
        self._inference = inference
        self._sidecar_interval = sidecar_interval
        # Extra sidecar flags, as the operator renders them (e.g. --power-limit-watts).
        self._sidecar_args = list(sidecar_args)
        self._fake_profile = fake_profile
        self._cluster = cluster
        self._namespace = namespace
        self._name = name
        self._workdir = workdir
        self._lock = threading.Lock()
        self._served: dict[str, PodProcesses] = {}
        self._stop = threading.Event()
        self._gpu_defaults: dict[str, Any] = {"utilization": 5}
        self._thread = threading.Thread(target=self._follow, name="pod-servers", daemon=True)
        self.started: list[str] = []

    def __enter__(self) -> PodServers:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            for processes in self._served.values():
                self._stop_pod(processes)
            self._served.clear()

    def set_gpu_defaults(self, **values: Any) -> None:
        """Readings for every current and future pod's fake GPU."""
        with self._lock:
            self._gpu_defaults = dict(values)
            for processes in self._served.values():
                processes.set_gpu(**values)

    def serving(self) -> list[PodProcesses]:
        with self._lock:
            return list(self._served.values())

    def ready(self) -> list[PodProcesses]:
        """Pods whose inference server answers /ready (without inference: whose sidecar is up)."""
        if not self._inference:
            return [p for p in self.serving() if p.sidecar_up()]
        return [p for p in self.serving() if p.ready()]

    def _pods(self) -> list[tuple[str, str]]:
        result = self._cluster.kubectl(
            "get", "pods", "-n", self._namespace, "-l", f"{OWNER_LABEL}={self._name}",
            "-o", "json", check=False, timeout=30,
        )  # fmt: skip
        if result.returncode != 0:
            return []
        running = []
        for pod in json.loads(result.stdout)["items"]:
            status = pod.get("status") or {}
            if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running":
                continue
            if status.get("podIP"):
                running.append((pod["metadata"]["name"], status["podIP"]))
        return running

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                pods = dict(self._pods())
                with self._lock:
                    for gone in set(self._served) - set(pods):
                        self._stop_pod(self._served.pop(gone))
                    for pod, ip in pods.items():
                        if pod not in self._served:
                            self._served[pod] = self._start_pod(pod, ip)
                            self.started.append(pod)
            except Exception:
                log.exception("following pods failed")
            self._stop.wait(1.0)

    def _start_pod(self, pod: str, ip: str) -> PodProcesses:
        logs = self._workdir / pod
        logs.mkdir(parents=True, exist_ok=True)
        state_file = logs / "gpu-state.json"
        state_file.write_text(json.dumps({"gpus": {"0": self._gpu_defaults}}))
        env = {**os.environ, **QUIET_ENV}
        inference_args = [
            str(BIN / "kuberank-inference"),
            "--host", ip,
            "--port", str(INFERENCE_PORT),
            "--debug-fault-injection",
            "--max-batch-tokens", "2048",
            "--max-batch-requests", "64",
            "--tokenization-workers", "1",
            "--device-handshake-file", str(logs / "device.json"),
            "--log-level", "warning",
        ]  # fmt: skip
        sidecar_args = [
            str(BIN / "kuberank-sidecar"),
            "--host", ip,
            "--port", str(SIDECAR_PORT),
            "--backend", "fake",
            "--fake-profile", self._fake_profile,
            "--fake-state-file", str(state_file),
            "--devices", "0",
            "--interval", str(self._sidecar_interval),
            "--pod-name", pod,
            "--pod-namespace", self._namespace,
            "--tuning-journal", "",
            "--log-level", "WARNING",
            *self._sidecar_args,
        ]  # fmt: skip
        inference = None
        if self._inference:
            inference = spawn(inference_args, log=logs / "inference.log", env=env)
        sidecar = spawn(sidecar_args, log=logs / "sidecar.log", env=env)
        log.info("serving pod %s on %s", pod, ip)
        return PodProcesses(
            pod=pod, ip=ip, inference=inference, sidecar=sidecar, state_file=state_file
        )

    @staticmethod
    def _stop_pod(processes: PodProcesses) -> None:
        if processes.inference is not None:
            stop_process(processes.inference)
        stop_process(processes.sidecar)


class Load:
    """Concurrent /rerank requests against every ready pod until stopped (bounded in time)."""

    def __init__(
        self, servers: PodServers, *, concurrency: int = 6, documents: int = 48, max_s: float = 180
    ) -> None:
        self._servers = servers
        self._concurrency = concurrency
        self._documents = documents
        self._deadline = time.monotonic() + max_s
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="load")
        self.sent = 0
        self.statuses: dict[int, int] = {}

    def __enter__(self) -> Load:
        for i in range(self._concurrency):
            self._pool.submit(self._worker, i)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _worker(self, seed: int) -> None:
        texts = [
            f"document {seed}-{i}: " + " ".join(["kubernetes gpu reranker"] * (8 + i % 16))
            for i in range(self._documents)
        ]
        turn = seed
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            targets = self._servers.ready()
            if not targets:
                self._stop.wait(0.5)
                continue
            target = targets[turn % len(targets)]
            turn += 1
            with contextlib.suppress(OSError):
                status, _ = http_json(
                    "POST",
                    f"{target.base_url}/rerank",
                    {"query": "which pod scales?", "texts": texts},
                    timeout=60,
                )
                self.sent += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1


def send_requests(target: PodProcesses, count: int) -> list[int]:
    """`count` small rerank requests one after another; their statuses."""
    statuses = []
    for i in range(count):
        status, _ = http_json(
            "POST",
            f"{target.base_url}/rerank",
            {"query": "oom?", "texts": [f"text {i}", "another text"]},
            timeout=60,
        )
        statuses.append(status)
    return statuses


@dataclass(frozen=True)
class KubernetesDiscovery:
    """What Prometheus' kubernetes_sd needs to watch one namespace's pods on the API server."""

    api_server: str
    ca_file: Path
    token_file: Path
    namespace: str

    @classmethod
    def service_account(
        cls, cluster: LocalCluster, *, namespace: str, workdir: Path
    ) -> KubernetesDiscovery:
        """A `prometheus` ServiceAccount allowed only to get/list/watch pods in `namespace`
        (as Prometheus runs in a cluster) and a bound token for it, written to a file."""
        name = "prometheus"
        cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
        cluster.kubectl(
            "create", "role", name, "-n", namespace,
            "--verb=get,list,watch", "--resource=pods",
        )  # fmt: skip
        cluster.kubectl(
            "create", "rolebinding", name, "-n", namespace,
            f"--role={name}", f"--serviceaccount={namespace}:{name}",
        )  # fmt: skip
        token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h")
        workdir.mkdir(parents=True, exist_ok=True)
        token_file = workdir / "sa-token"
        token_file.write_text(token.stdout.strip())
        token_file.chmod(0o600)
        kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
        ca_file = Path(kubeconfig["clusters"][0]["cluster"]["certificate-authority"])
        return cls(
            api_server=cluster.server, ca_file=ca_file, token_file=token_file, namespace=namespace
        )


class Monitoring:
    """Prometheus discovering the pods through kubernetes_sd (the Go-built Prometheus, see
    `KubernetesDiscovery`) or through the operator's HTTP service discovery at `targets_url`
    (Debian's Prometheus), with the given rules, and Debian's Alertmanager posting to the
    operator's webhook."""

    def __init__(
        self,
        *,
        rules_yaml: str,
        webhook_url: str,
        token: str,
        workdir: Path,
        targets_url: str | None = None,
        kubernetes: KubernetesDiscovery | None = None,
        interval: str = "1s",
    ) -> None:
        if (targets_url is None) == (kubernetes is None):
            raise ValueError("give exactly one of targets_url (HTTP SD) or kubernetes")
        prometheus = str(prometheus_binary()) if kubernetes else shutil.which("prometheus")
        alertmanager = shutil.which("prometheus-alertmanager")
        if prometheus is None or alertmanager is None:
            raise RuntimeError("prometheus / prometheus-alertmanager missing: make system-deps")
        self.prometheus_port, self.alertmanager_port = free_ports(2)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rules.yaml").write_text(rules_yaml)
        token_file = workdir / "webhook-token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        (workdir / "alertmanager.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "kuberank",
                        "group_by": ["alertname", "namespace", "rerankerdeployment", "pod"],
                        "group_wait": "0s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {
                            "name": "kuberank",
                            "webhook_configs": [
                                {
                                    "url": webhook_url,
                                    "send_resolved": True,
                                    "http_config": {
                                        "authorization": {
                                            "type": "Bearer",
                                            "credentials_file": str(token_file),
                                        }
                                    },
                                }
                            ],
                        }
                    ],
                }
            )
        )
        (workdir / "prometheus.yml").write_text(
            yaml.safe_dump(
                prometheus_config(
                    targets_url=targets_url,
                    kubernetes=kubernetes,
                    token_file=token_file,
                    alertmanager=f"127.0.0.1:{self.alertmanager_port}",
                    interval=interval,
                )
            )
        )
        am_args = [
            alertmanager,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
            "--cluster.listen-address=",  # no HA gossip port
        ]
        self.alertmanager = spawn(am_args, log=workdir / "alertmanager.log")
        prometheus_args = [
            prometheus,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
        ]
        self.prometheus = spawn(prometheus_args, log=workdir / "prometheus.log")

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        try:
            status, body = http_json("GET", url)
        except OSError:  # not listening yet
            return []
        if status != 200:
            return []
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets_up(self) -> int:
        return len(self.query('up{job="kuberank-pods"} == 1'))

    def active_targets(self) -> list[dict[str, Any]]:
        """The scrape targets Prometheus' /api/v1/targets lists, with their discovered labels."""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/targets?state=active"
        status, body = http_json("GET", url)
        if status != 200:
            raise RuntimeError(f"GET {url}: {status} {body}")
        targets: list[dict[str, Any]] = body["data"]["activeTargets"]
        return targets

    def stop_prometheus(self) -> None:
        stop_process(self.prometheus)

    def stop(self) -> None:
        stop_process(self.prometheus)
        stop_process(self.alertmanager)


def prometheus_config(
    *,
    token_file: Path,
    alertmanager: str,
    targets_url: str | None = None,
    kubernetes: KubernetesDiscovery | None = None,
    interval: str = "1s",
) -> dict[str, Any]:
    """Scrape kuberank pods found through kubernetes_sd (relabeled as docs/operator/prometheus.md
    shows) or through the operator's HTTP service discovery at `targets_url`; either way the
    targets carry namespace, pod and rerankerdeployment, as the rules expect."""
    job: dict[str, Any] = {"job_name": "kuberank-pods", "scrape_timeout": "1s"}
    if kubernetes is not None:
        job["kubernetes_sd_configs"] = [
            {
                "role": "pod",
                "api_server": kubernetes.api_server,
                "namespaces": {"names": [kubernetes.namespace]},
                "authorization": {"credentials_file": str(kubernetes.token_file)},
                "tls_config": {"ca_file": str(kubernetes.ca_file)},
            }
        ]
        job["relabel_configs"] = documented_pod_relabeling()
    else:
        job["http_sd_configs"] = [
            {
                "url": targets_url,
                "refresh_interval": "1s",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
            }
        ]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": ["rules.yaml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [job],
    }


PROMETHEUS_DOC = REPO / "docs" / "operator" / "prometheus.md"


def documented_pod_relabeling() -> list[dict[str, Any]]:
    """The relabel_configs of the kubernetes_sd scrape job in docs/operator/prometheus.md (the
    PodMonitor's selection), so the e2e runs what users are told to write."""
    text = PROMETHEUS_DOC.read_text()
    for block in text.split("```yaml\n")[1:]:
        body = block.split("```", 1)[0]
        if "kubernetes_sd_configs" in body:
            relabeling: list[dict[str, Any]] = yaml.safe_load(body)["scrape_configs"][0][
                "relabel_configs"
            ]
            return relabeling
    raise RuntimeError(f"{PROMETHEUS_DOC} has no ```yaml block with kubernetes_sd_configs")


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    wait_until(condition, timeout=timeout, what=what, interval=1.0)
