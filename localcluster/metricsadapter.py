"""prometheus-adapter (built from Go modules, hack/build-tools.sh) serving the custom metrics API
(`custom.metrics.k8s.io/v1beta2`) from a Prometheus, registered in the local API server as an
APIService, so kube-controller-manager's HPA controller reads per-pod metrics through it.

How the API server reaches it: the aggregator proxies to the Service an APIService names. With
no kube-proxy and no pod network a ClusterIP leads nowhere, and Endpoints may not hold loopback
addresses (so `--enable-aggregator-routing` would not help either); an ExternalName Service is
resolved by the aggregator itself to `https://EXTERNALNAME:PORT`, so `localhost` and the
adapter's port reach it on loopback with no change to the API server's flags. The aggregator
checks the adapter's serving certificate for the name `SERVICE.NAMESPACE.svc` against the
APIService's caBundle: a CA made here signs it. The API server's front-proxy client certificate
and the requestheader flags it already runs with (localcluster/components.py) are what the
adapter authenticates aggregated requests by (read from the `extension-apiserver-authentication`
ConfigMap through its kubeconfig); it authorizes them with SubjectAccessReviews.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from localcluster.certificates import KeyPair, render_openssl_config
from localcluster.cluster import LocalCluster, free_ports, wait_until
from localcluster.components import LOOPBACK, ComponentSpec
from localcluster.processes import start, stop, wait_healthy
from localcluster.toolchain import (
    VERSIONS_FILE,
    ToolchainMissingError,
    cache_dir,
    parse_versions,
)

CUSTOM_METRICS_GROUP = "custom.metrics.k8s.io"
CUSTOM_METRICS_VERSION = "v1beta2"
SERVICE_NAME = "prometheus-adapter"


def prometheus_adapter_binary() -> Path:
    """The cached prometheus-adapter build; a clear error naming the fix if unbuilt."""
    version = parse_versions(VERSIONS_FILE.read_text()).get("PROMETHEUS_ADAPTER_VERSION")
    if version is None:
        raise ValueError(f"{VERSIONS_FILE} has no PROMETHEUS_ADAPTER_VERSION")
    path = cache_dir() / "bin" / f"prometheus-adapter-{version}" / "adapter"
    if not os.access(path, os.X_OK):
        raise ToolchainMissingError(
            f"prometheus-adapter is not built: missing {path}. Run `make tools` (~5 min)"
        )
    return path


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def _issue(directory: Path, name: str, config: str, *, ca: KeyPair | None) -> KeyPair:
    pair = KeyPair(cert=directory / f"{name}.crt", key=directory / f"{name}.key")
    config_file = directory / f"{name}.cnf"
    config_file.write_text(config)
    args = [
        "req", "-x509", "-new", "-config", str(config_file), "-days", "30",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(pair.key), "-out", str(pair.cert),
    ]  # fmt: skip
    if ca is not None:
        args += ["-CA", str(ca.cert), "-CAkey", str(ca.key)]
    _openssl(*args)
    config_file.unlink()
    return pair


@dataclass(frozen=True)
class ServingCertificate:
    ca: KeyPair
    serving: KeyPair


def serving_certificate(directory: Path, *, names: tuple[str, ...]) -> ServingCertificate:
    """A CA of its own and a serving certificate it signs for DNS `names` and 127.0.0.1."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = _issue(
        directory,
        "adapter-ca",
        render_openssl_config(
            common_name="prometheus-adapter-ca",
            organization=None,
            extended_key_usage=None,
            ca=True,
        ),
        ca=None,
    )
    serving = _issue(
        directory,
        "adapter",
        render_openssl_config(
            common_name=names[0],
            organization=None,
            extended_key_usage="serverAuth",
            subject_alt_names=(*(f"DNS:{n}" for n in names), f"IP:{LOOPBACK}"),
        ),
        ca=ca,
    )
    return ServingCertificate(ca=ca, serving=serving)


def registration_objects(*, namespace: str, port: int, ca_bundle: bytes) -> list[dict[str, object]]:
    """The ExternalName Service on loopback and the APIService (module docstring)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE_NAME, "namespace": namespace},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{CUSTOM_METRICS_VERSION}.{CUSTOM_METRICS_GROUP}"},
            "spec": {
                "group": CUSTOM_METRICS_GROUP,
                "version": CUSTOM_METRICS_VERSION,
                "groupPriorityMinimum": 100,
                "versionPriority": 200,
                "service": {"name": SERVICE_NAME, "namespace": namespace, "port": port},
                "caBundle": base64.b64encode(ca_bundle).decode(),
            },
        },
    ]


class PrometheusAdapter:
    """prometheus-adapter on 127.0.0.1 with the rules in `config` (its --config file), querying
    `prometheus_url`, registered as the cluster's custom metrics API until `stop()`."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        config: Path,
        prometheus_url: str,
        workdir: Path,
        namespace: str = "monitoring",
        relist_interval: str = "5s",
        timeout: float = 120,
    ) -> None:
        self._cluster = cluster
        (self.port,) = free_ports(1)
        cert = serving_certificate(
            workdir / "adapter-pki", names=(f"{SERVICE_NAME}.{namespace}.svc", "localhost")
        )
        kubeconfig = str(cluster.kubeconfig)  # the admin: a throw-away cluster
        argv = [
            str(prometheus_adapter_binary()),
            f"--secure-port={self.port}",
            f"--bind-address={LOOPBACK}",
            f"--tls-cert-file={cert.serving.cert}",
            f"--tls-private-key-file={cert.serving.key}",
            f"--lister-kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--prometheus-url={prometheus_url}",
            f"--metrics-relist-interval={relist_interval}",
            f"--config={config}",
            "--v=2",
        ]
        self.log = workdir / "prometheus-adapter.log"
        spec = ComponentSpec(
            name="prometheus-adapter",
            argv=argv,
            health_url=f"https://{LOOPBACK}:{self.port}/healthz",
        )
        self._component, self._popen = start(
            spec, log=self.log, env=os.environ, die_with_parent=True
        )
        self._objects = registration_objects(
            namespace=namespace, port=self.port, ca_bundle=cert.ca.cert.read_bytes()
        )
        try:
            wait_healthy(
                self._component,
                self._popen,
                url=spec.health_url,
                context=ssl.create_default_context(cafile=str(cert.ca.cert)),
                timeout=60,
            )
            cluster.kubectl("create", "namespace", namespace, check=False)
            cluster.kubectl(
                "apply", "-f", "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": self._objects}),
            )  # fmt: skip
            wait_until(
                self.available,
                timeout=timeout,
                what=f"APIService {CUSTOM_METRICS_VERSION}.{CUSTOM_METRICS_GROUP} Available",
                interval=1.0,
            )
        except BaseException:
            self.stop()
            raise

    def available(self) -> bool:
        body = self._cluster.kubectl_json(
            "get", "apiservice", f"{CUSTOM_METRICS_VERSION}.{CUSTOM_METRICS_GROUP}"
        )
        conditions = (body.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    def get(self, path: str) -> object:
        """GET /apis/custom.metrics.k8s.io/v1beta2/PATH through the API server."""
        raw = self._cluster.kubectl(
            "get", "--raw", f"/apis/{CUSTOM_METRICS_GROUP}/{CUSTOM_METRICS_VERSION}/{path}"
        )
        return json.loads(raw.stdout)

    def stop(self) -> None:
        """Unregister (the HPA controller then sees no custom metrics API) and stop."""
        for obj in reversed(self._objects):
            kind = str(obj["kind"]).lower()
            meta = obj["metadata"]
            assert isinstance(meta, dict)
            args = ["delete", kind, str(meta["name"]), "--ignore-not-found", "--wait=false"]
            if "namespace" in meta:
                args += ["-n", str(meta["namespace"])]
            self._cluster.kubectl(*args, check=False)
        stop([self._component], popens={self._popen.pid: self._popen})

    def __enter__(self) -> PrometheusAdapter:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
