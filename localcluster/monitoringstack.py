"""The Prometheus Operator (built from Go modules, hack/build-tools.sh) against the local cluster,
and the real Prometheus and Alertmanager it manages.

The operator runs out of cluster (as the admin, with the cluster's kubeconfig certificates) and
reconciles Prometheus and Alertmanager objects as it does anywhere: into StatefulSets, and into
the configuration their pods run: the Secret `prometheus-NAME` (`prometheus.yaml.gz`, with the
scrape configs it generates from the selected PodMonitors), the ConfigMaps
`prometheus-NAME-rulefiles-N` (the selected PrometheusRules) and the Secret
`alertmanager-NAME-generated` (`alertmanager.yaml.gz`: the base config and the selected
AlertmanagerConfigs). The local cluster's nodes are kwok's, without a kubelet, so those pods never
run a container. What a pod's volume mounts and its config-reloader sidecar would do is done here
instead: `OperatedPrometheus` and `OperatedAlertmanager` follow the generated objects, write them
where the pod would see them (under a root directory standing for the container's `/`), and run
the real `prometheus` (Go-built, with kubernetes_sd) and `alertmanager` (Debian's) on loopback
from exactly that configuration, reloading (SIGHUP) whenever the operator changes it.

The only rewrites are those a pod makes implicitly: absolute paths (`/etc/prometheus/...`,
`/etc/alertmanager/...`) are read under the root directory, `$(POD_NAME)` is expanded as the
config-reloader expands the pod's environment, and kubernetes_sd without `api_server` (in-cluster
discovery: the pod's ServiceAccount token and `KUBERNETES_SERVICE_HOST`) gets the API server's
address, its CA and the token of the Prometheus' ServiceAccount.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.request import urlopen

import yaml

from localcluster.cluster import LocalCluster, free_ports, wait_until
from localcluster.components import LOOPBACK, ComponentSpec
from localcluster.processes import Component, log_tail, start, stop, wait_healthy
from localcluster.toolchain import (
    VERSIONS_FILE,
    ToolchainMissingError,
    cache_dir,
    parse_versions,
    prometheus_binary,
)

MONITORING_API = "monitoring.coreos.com/v1"
# what Prometheus' in-cluster kubernetes_sd reads from the pod's ServiceAccount mount
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
FOLLOW_INTERVAL_S = 2.0


@dataclass(frozen=True)
class PrometheusOperatorTools:
    """The Go-built operator and the CRDs of the same module version."""

    version: str
    binary: Path
    crds: list[Path]


def prometheus_operator_tools() -> PrometheusOperatorTools:
    """The cached prometheus-operator build; a clear error naming the fix if unbuilt."""
    version = parse_versions(VERSIONS_FILE.read_text()).get("PROMETHEUS_OPERATOR_VERSION")
    if version is None:
        raise ValueError(f"{VERSIONS_FILE} has no PROMETHEUS_OPERATOR_VERSION")
    directory = cache_dir() / "bin" / f"prometheus-operator-{version}"
    binary = directory / "operator"
    crds = sorted((directory / "crds").glob("monitoring.coreos.com_*.yaml"))
    if not os.access(binary, os.X_OK) or not crds:
        raise ToolchainMissingError(
            f"the Prometheus Operator is not built: missing {binary} or its CRDs in "
            f"{directory / 'crds'}. Run `make tools` (first build: ~5 min)"
        )
    return PrometheusOperatorTools(version=version, binary=binary, crds=crds)


def alertmanager_binary() -> Path:
    """Debian's Alertmanager (`make system-deps`)."""
    found = shutil.which("prometheus-alertmanager")
    if found is None:
        raise ToolchainMissingError("prometheus-alertmanager is missing: run `make system-deps`")
    return Path(found)


def binary_version(binary: Path) -> str:
    """`v3.16.0` from `prometheus, version 3.16.0 (branch: ...)`: the version a Prometheus or
    Alertmanager object declares, so the operator generates configuration that binary reads."""
    result = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    first = (result.stdout or result.stderr).splitlines()[0]
    return "v" + first.split("version ", 1)[1].split()[0]


def install_crds(cluster: LocalCluster, tools: PrometheusOperatorTools) -> None:
    """The monitoring.coreos.com CRDs, applied server-side (the Prometheus CRD is too large for
    the last-applied annotation), then waited for until served."""
    for crd in tools.crds:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd), timeout=120)
    # monitoring.coreos.com_prometheuses.yaml holds prometheuses.monitoring.coreos.com
    names = [".".join(reversed(crd.stem.split("_", 1))) for crd in tools.crds]
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        *[f"crd/{name}" for name in names], timeout=90,
    )  # fmt: skip


class PrometheusOperator:
    """prometheus-operator reconciling `namespaces` (all when empty) of the local cluster."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        workdir: Path,
        namespaces: Sequence[str] = (),
        tools: PrometheusOperatorTools | None = None,
    ) -> None:
        self.tools = tools or prometheus_operator_tools()
        (self.port,) = free_ports(1)
        pki = cluster.files.pki_dir
        argv = [
            str(self.tools.binary),
            f"--apiserver={cluster.server}",
            f"--ca-file={pki / 'ca.crt'}",
            f"--cert-file={pki / 'admin.crt'}",
            f"--key-file={pki / 'admin.key'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log-level=info",
        ]
        if namespaces:
            argv.append(f"--namespaces={','.join(namespaces)}")
        self.log = workdir / "prometheus-operator.log"
        spec = ComponentSpec(
            name="prometheus-operator",
            argv=argv,
            health_url=f"http://{LOOPBACK}:{self.port}/healthz",
        )
        self._component, self._popen = start(
            spec, log=self.log, env=os.environ, die_with_parent=True
        )
        try:
            wait_healthy(
                self._component, self._popen, url=spec.health_url, context=None, timeout=60
            )
        except BaseException:
            self.stop()
            raise

    last_error = ""  # (it is no follower)

    def stop(self) -> None:
        stop([self._component], popens={self._popen.pid: self._popen})

    def __enter__(self) -> PrometheusOperator:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# -- the pod's view of the generated configuration ---------------------------------------------


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(v, change) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    return value


def under_root(root: Path, prefixes: Sequence[str]) -> Callable[[str], str]:
    """A path the container sees at `/etc/prometheus/x` read at `ROOT/etc/prometheus/x`."""

    def change(text: str) -> str:
        for prefix in prefixes:
            if text.startswith(prefix):
                return str(root) + text
        return text

    return change


@dataclass(frozen=True)
class InClusterAccess:
    """What a pod's in-cluster Kubernetes client uses: the API server and the ServiceAccount's
    CA and token (mounted at SERVICE_ACCOUNT_DIR in a pod)."""

    api_server: str
    ca_file: Path
    token_file: Path

    @classmethod
    def service_account(
        cls, cluster: LocalCluster, *, namespace: str, name: str, directory: Path
    ) -> InClusterAccess:
        """A token of ServiceAccount NAMESPACE/NAME, written to DIRECTORY (as the kubelet
        projects it into the pod), beside the cluster's CA."""
        token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=2h")
        directory.mkdir(parents=True, exist_ok=True)
        token_file = directory / "token"
        token_file.write_text(token.stdout.strip())
        token_file.chmod(0o600)
        ca_file = directory / "ca.crt"
        shutil.copyfile(cluster.files.pki_dir / "ca.crt", ca_file)
        return cls(api_server=cluster.server, ca_file=ca_file, token_file=token_file)


def prometheus_config_as_run(
    generated: str, *, root: Path, pod_name: str, access: InClusterAccess
) -> dict[str, Any]:
    """The operator's prometheus.yaml as the pod's Prometheus reads it (module docstring)."""
    expanded = generated.replace("$(POD_NAME)", pod_name).replace("$(SHARD)", "0")
    config: dict[str, Any] = _map_strings(
        yaml.safe_load(expanded), under_root(root, ("/etc/prometheus/",))
    )

    def in_cluster(sd: dict[str, Any]) -> dict[str, Any]:
        if sd.get("api_server"):
            return sd
        return {
            **sd,
            "api_server": access.api_server,
            "authorization": {"credentials_file": str(access.token_file)},
            "tls_config": {"ca_file": str(access.ca_file)},
        }

    for job in config.get("scrape_configs") or []:
        job["kubernetes_sd_configs"] = [
            in_cluster(sd) for sd in job.get("kubernetes_sd_configs") or []
        ]
    for am in (config.get("alerting") or {}).get("alertmanagers") or []:
        am["kubernetes_sd_configs"] = [
            in_cluster(sd) for sd in am.get("kubernetes_sd_configs") or []
        ]
    return config


def _secret_data(obj: Mapping[str, Any]) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}


def _write_tree(directory: Path, files: Mapping[str, bytes]) -> None:
    """Replace DIRECTORY's files with FILES (as a ConfigMap or Secret volume is updated)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)


class _Follower:
    """Runs one binary from configuration the operator generates, rewriting it and reloading the
    process (SIGHUP) whenever the generated objects change; the config-reloader's job."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        name: str,
        workdir: Path,
        fetch: Callable[[], dict[str, bytes] | None],
        materialize: Callable[[dict[str, bytes]], None],
        argv: list[str],
        health_url: str,
    ) -> None:
        self._cluster = cluster
        self._name = name
        self._fetch = fetch
        self._materialize = materialize
        self._argv = argv
        self._health_url = health_url
        self.log = workdir / f"{name}.log"
        self._component: Component | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._digest = ""
        self.reloads = 0
        self.last_error = ""  # of the last failed poll, for a failing test's output
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"follow-{name}", daemon=True)

    def start(self, *, timeout: float) -> None:
        """Wait for the generated configuration, start the binary on it, then follow it."""
        wait_until(
            self._sync, timeout=timeout, what=f"the operator's {self._name} config", interval=1.0
        )
        assert self._component is not None
        assert self._popen is not None
        wait_healthy(self._component, self._popen, url=self._health_url, context=None, timeout=60)
        self._thread.start()

    def _sync(self) -> bool:
        objects = self._fetch()
        if objects is None:
            return False
        digest = hashlib.sha256(
            json.dumps({k: v.hex() for k, v in sorted(objects.items())}).encode()
        ).hexdigest()
        if digest == self._digest:
            return True
        self._materialize(objects)
        self._digest = digest
        if self._popen is None:
            spec = ComponentSpec(name=self._name, argv=self._argv, health_url=self._health_url)
            self._component, self._popen = start(
                spec, log=self.log, env=os.environ, die_with_parent=True
            )
        else:
            self._popen.send_signal(signal.SIGHUP)
            self.reloads += 1
        return True

    def _follow(self) -> None:
        while not self._stop.wait(FOLLOW_INTERVAL_S):
            try:
                self._sync()
            except Exception as error:  # a failed poll is retried on the next one
                self.last_error = f"{type(error).__name__}: {error}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self._component is not None and self._popen is not None:
            stop([self._component], popens={self._popen.pid: self._popen})


@dataclass(frozen=True)
class _NamespaceObjects:
    """The Secrets, ConfigMaps, Prometheuses and Alertmanagers of one namespace, fetched in one
    kubectl call (each follower polls every FOLLOW_INTERVAL_S on two shared cores)."""

    by_kind: dict[str, dict[str, dict[str, Any]]]

    @classmethod
    def fetch(cls, cluster: LocalCluster, namespace: str) -> _NamespaceObjects | None:
        kinds = ",".join(
            ("secrets", "configmaps", "prometheuses.monitoring.coreos.com",
             "alertmanagers.monitoring.coreos.com")
        )  # fmt: skip
        result = cluster.kubectl(
            "get", kinds, "-n", namespace, "-o", "json", check=False, timeout=30
        )
        if result.returncode != 0:
            return None
        by_kind: dict[str, dict[str, dict[str, Any]]] = {}
        for item in json.loads(result.stdout)["items"]:
            by_kind.setdefault(item["kind"], {})[item["metadata"]["name"]] = item
        return cls(by_kind=by_kind)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.by_kind.get(kind, {}).get(name) or {}

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return list(self.by_kind.get(kind, {}).values())


def _mounted_secrets(objects: _NamespaceObjects, owner: Mapping[str, Any]) -> dict[str, bytes]:
    """`spec.secrets` of a Prometheus or Alertmanager as its pod mounts them: secrets/S/KEY."""
    files: dict[str, bytes] = {}
    for secret_name in (owner.get("spec") or {}).get("secrets") or []:
        for key, content in _secret_data(objects.get("Secret", secret_name)).items():
            files[f"secrets/{secret_name}/{key}"] = content
    return files


class _Operated:
    """What Prometheus and Alertmanager share here: one binary on 127.0.0.1:`port`, run by a
    _Follower from what the operator generated, under `root` (the pod's /etc/KIND paths)."""

    kind = ""  # "prometheus" or "alertmanager": the pod's /etc/KIND and the generated file's name
    port: int
    root: Path
    _follower: _Follower

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def reloads(self) -> int:
        return self._follower.reloads

    @property
    def log(self) -> Path:
        return self._follower.log

    @property
    def last_error(self) -> str:
        return self._follower.last_error

    def generated_config(self) -> dict[str, Any]:
        """The configuration as the operator generated it (before the pod's rewrites)."""
        text = (self.root / "etc" / self.kind / "config" / f"{self.kind}.yaml").read_text()
        config: dict[str, Any] = yaml.safe_load(text)
        return config

    def stop(self) -> None:
        self._follower.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class OperatedPrometheus(_Operated):
    """The real Prometheus on 127.0.0.1 from what the operator generated for the Prometheus
    object NAMESPACE/NAME: its config Secret, rule ConfigMaps, TLS assets and `spec.secrets`.
    `access` is its ServiceAccount's in-cluster access (kubernetes_sd)."""

    kind = "prometheus"

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        namespace: str,
        name: str,
        access: InClusterAccess,
        workdir: Path,
        timeout: float = 120,
    ) -> None:
        self.namespace = namespace
        self.name = name
        (self.port,) = free_ports(1)
        self.root = workdir / f"prometheus-{name}-root"
        self._cluster = cluster
        self._access = access
        config_out = self.root / "etc" / "prometheus" / "config_out" / "prometheus.env.yaml"
        self.config_file = config_out
        self._follower = _Follower(
            cluster,
            name=f"prometheus-{name}",
            workdir=workdir,
            fetch=self._fetch,
            materialize=self._materialize,
            argv=[
                str(prometheus_binary()),
                f"--config.file={config_out}",
                f"--storage.tsdb.path={workdir / f'prometheus-{name}-db'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                # as the operator's StatefulSet runs it
                "--storage.tsdb.retention.time=1h",
            ],
            health_url=f"http://{LOOPBACK}:{self.port}/-/ready",
        )
        self._follower.start(timeout=timeout)

    def _fetch(self) -> dict[str, bytes] | None:
        """config/prometheus.yaml.gz, rules/CM/FILE, certs/FILE, secrets/S/FILE (pod paths)."""
        objects = _NamespaceObjects.fetch(self._cluster, self.namespace)
        if objects is None:
            return None
        config = _secret_data(objects.get("Secret", f"prometheus-{self.name}"))
        if "prometheus.yaml.gz" not in config:
            return None
        files = {"config/prometheus.yaml.gz": config["prometheus.yaml.gz"]}
        for cm in objects.of_kind("ConfigMap"):
            if (cm["metadata"].get("labels") or {}).get("prometheus-name") != self.name:
                continue
            for key, text in (cm.get("data") or {}).items():
                files[f"rules/{cm['metadata']['name']}/{key}"] = text.encode()
        tls = objects.get("Secret", f"prometheus-{self.name}-tls-assets-0")
        for key, content in _secret_data(tls).items():
            files[f"certs/{key}"] = content
        files.update(_mounted_secrets(objects, objects.get("Prometheus", self.name)))
        return files

    def _materialize(self, files: dict[str, bytes]) -> None:
        etc = self.root / "etc" / "prometheus"
        groups: dict[str, dict[str, bytes]] = {}
        for path, content in files.items():
            top, _, rest = path.partition("/")
            if top == "config":
                continue
            directory, _, leaf = rest.rpartition("/")
            groups.setdefault(f"{top}/{directory}" if directory else top, {})[leaf] = content
        for stale in ("rules", "certs", "secrets"):
            if (etc / stale).exists():
                shutil.rmtree(etc / stale)
        for directory, members in groups.items():
            _write_tree(etc / directory, members)
        generated = gzip.decompress(files["config/prometheus.yaml.gz"]).decode()
        (etc / "config").mkdir(parents=True, exist_ok=True)
        (etc / "config" / "prometheus.yaml").write_text(generated)
        config = prometheus_config_as_run(
            generated, root=self.root, pod_name=f"prometheus-{self.name}-0", access=self._access
        )
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def api(self, path: str) -> Any:
        """GET /api/v1/PATH's `data`."""
        with urlopen(f"{self.url}/api/v1/{path}", timeout=10) as response:
            return json.loads(response.read())["data"]


class OperatedAlertmanager(_Operated):
    """Debian's Alertmanager on 127.0.0.1:`port` from the operator's generated configuration for
    the Alertmanager object NAMESPACE/NAME (and its `spec.secrets`, mounted as in the pod)."""

    kind = "alertmanager"

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        namespace: str,
        name: str,
        port: int,
        workdir: Path,
        timeout: float = 120,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.port = port
        self.root = workdir / f"alertmanager-{name}-root"
        self._cluster = cluster
        self.config_file = (
            self.root / "etc" / "alertmanager" / "config_out" / "alertmanager.env.yaml"
        )
        self._follower = _Follower(
            cluster,
            name=f"alertmanager-{name}",
            workdir=workdir,
            fetch=self._fetch,
            materialize=self._materialize,
            argv=[
                str(alertmanager_binary()),
                f"--config.file={self.config_file}",
                f"--storage.path={workdir / f'alertmanager-{name}-db'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                "--cluster.listen-address=",  # one replica: no gossip port
            ],
            health_url=f"http://{LOOPBACK}:{port}/-/ready",
        )
        self._follower.start(timeout=timeout)

    def _fetch(self) -> dict[str, bytes] | None:
        """config/alertmanager.yaml.gz and secrets/S/FILE (pod paths)."""
        objects = _NamespaceObjects.fetch(self._cluster, self.namespace)
        if objects is None:
            return None
        data = _secret_data(objects.get("Secret", f"alertmanager-{self.name}-generated"))
        if "alertmanager.yaml.gz" not in data:
            return None
        files = {"config/alertmanager.yaml.gz": data["alertmanager.yaml.gz"]}
        files.update(_mounted_secrets(objects, objects.get("Alertmanager", self.name)))
        return files

    def _materialize(self, files: dict[str, bytes]) -> None:
        etc = self.root / "etc" / "alertmanager"
        if (etc / "secrets").exists():
            shutil.rmtree(etc / "secrets")
        mounted: dict[str, dict[str, bytes]] = {}
        for path, content in files.items():
            top, _, rest = path.partition("/")
            if top == "secrets":
                secret_name, _, key = rest.partition("/")
                mounted.setdefault(secret_name, {})[key] = content
        for secret_name, members in mounted.items():
            _write_tree(etc / "secrets" / secret_name, members)
        generated = gzip.decompress(files["config/alertmanager.yaml.gz"]).decode()
        (etc / "config").mkdir(parents=True, exist_ok=True)
        (etc / "config" / "alertmanager.yaml").write_text(generated)
        config = _map_strings(
            yaml.safe_load(generated), under_root(self.root, ("/etc/alertmanager/",))
        )
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))


# -- a kube-prometheus-stack-like stack --------------------------------------------------------


def kube_prometheus_stack_objects(
    *,
    namespace: str,
    release: str,
    prometheus_version: str,
    alertmanager_version: str,
    alertmanager_address: str,
    interval: str = "1s",
) -> list[dict[str, Any]]:
    """What kube-prometheus-stack's chart creates for release RELEASE, reduced to what matters
    here: a Prometheus and an Alertmanager that select PodMonitors, PrometheusRules and
    AlertmanagerConfigs in every namespace by the label `release: RELEASE` (the chart's
    `*SelectorNilUsesHelmValues: true` defaults), and Prometheus' ServiceAccount with the
    chart's read access to pods, services and endpoints.

    Prometheus reaches the Alertmanager through `additionalAlertManagerConfigs` (static, at
    ALERTMANAGER_ADDRESS) rather than by discovering the `alertmanager-operated` Service's
    endpoints: the API server refuses Endpoints and EndpointSlices on loopback addresses, which
    are the only pod addresses kwok's nodes have. Their pods stay Pending (a node selector no
    node has): the binaries run on loopback instead (module docstring)."""
    name = release
    match = {"matchLabels": {"release": release}}
    unscheduled = {"kuberank.dev/monitoring-stack": "runs-on-loopback"}
    meta = {"namespace": namespace, "labels": {"release": release}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": f"{name}-prometheus", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"{name}-prometheus", "labels": {"release": release}},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "services", "endpoints"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["get", "list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{name}-prometheus", "labels": {"release": release}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": f"{name}-prometheus"},
            "subjects": [{"kind": "ServiceAccount", "name": f"{name}-prometheus",
                          "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-alertmanagers", **meta},
            "stringData": {
                "alertmanagers.yaml": yaml.safe_dump(
                    [{"static_configs": [{"targets": [alertmanager_address]}],
                      "api_version": "v2"}]
                )
            },
        },
        {
            "apiVersion": MONITORING_API,
            "kind": "Prometheus",
            "metadata": {"name": name, **meta},
            "spec": {
                "version": prometheus_version,
                "replicas": 1,
                "serviceAccountName": f"{name}-prometheus",
                "podMonitorSelector": match,
                "podMonitorNamespaceSelector": {},
                "serviceMonitorSelector": match,
                "serviceMonitorNamespaceSelector": {},
                "ruleSelector": match,
                "ruleNamespaceSelector": {},
                "scrapeInterval": interval,
                "evaluationInterval": interval,
                "additionalAlertManagerConfigs": {
                    "name": f"{name}-alertmanagers", "key": "alertmanagers.yaml"
                },
                "nodeSelector": unscheduled,
            },
        },
        {
            "apiVersion": MONITORING_API,
            "kind": "Alertmanager",
            "metadata": {"name": name, **meta},
            "spec": {
                "version": alertmanager_version,
                "replicas": 1,
                "alertmanagerConfigSelector": match,
                "alertmanagerConfigNamespaceSelector": {},
                "nodeSelector": unscheduled,
            },
        },
    ]  # fmt: skip


class MonitoringStack:
    """The monitoring.coreos.com CRDs, prometheus-operator, and a kube-prometheus-stack-like
    Prometheus and Alertmanager (release RELEASE in NAMESPACE) run from the operator's config.
    `stop()` stops the processes; the objects stay (the cluster is throw-away)."""

    def __init__(
        self, cluster: LocalCluster, *, workdir: Path, namespace: str, release: str
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.release = release
        workdir.mkdir(parents=True, exist_ok=True)
        self.tools = prometheus_operator_tools()
        install_crds(cluster, self.tools)
        cluster.kubectl("create", "namespace", namespace, check=False)
        (am_port,) = free_ports(1)
        objects = kube_prometheus_stack_objects(
            namespace=namespace,
            release=release,
            prometheus_version=binary_version(prometheus_binary()),
            alertmanager_version=binary_version(alertmanager_binary()),
            alertmanager_address=f"{LOOPBACK}:{am_port}",
        )
        cluster.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                  "items": objects}),
        )  # fmt: skip
        self._started: list[PrometheusOperator | OperatedAlertmanager | OperatedPrometheus] = []
        self._launched = self._started.copy()  # kept after stop(), for logs()
        try:
            self.operator = PrometheusOperator(cluster, workdir=workdir, tools=self.tools)
            self._started.append(self.operator)
            self._launched.append(self.operator)
            self.alertmanager = OperatedAlertmanager(
                cluster, namespace=namespace, name=release, port=am_port, workdir=workdir
            )
            self._started.append(self.alertmanager)
            self._launched.append(self.alertmanager)
            access = InClusterAccess.service_account(
                cluster,
                namespace=namespace,
                name=f"{release}-prometheus",
                directory=workdir / "serviceaccount",
            )
            self.prometheus = OperatedPrometheus(
                cluster, namespace=namespace, name=release, access=access, workdir=workdir
            )
            self._started.append(self.prometheus)
            self._launched.append(self.prometheus)
        except BaseException:
            self.stop()
            raise

    def logs(self) -> str:
        """The last lines of every process' log, for a failing test's output."""
        parts = []
        for process in self._launched:
            parts.append(f"--- {process.log}\n{log_tail(process.log)}")
            if process.last_error:
                parts.append(f"(last failed poll: {process.last_error})")
        return "\n".join(parts)

    def stop(self) -> None:
        for process in reversed(self._started):
            process.stop()
        self._started.clear()

    def __enter__(self) -> MonitoringStack:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
