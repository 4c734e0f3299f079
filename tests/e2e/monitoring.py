"""Prometheus and Debian's Alertmanager for the alerting e2e tests and benchmarks. Prometheus finds
the pods either through kubernetes_sd against the local API server as a least-privilege
ServiceAccount (the Go-built Prometheus 3.x: Debian's 2.42 lacks kubernetes_sd) or through the
operator's HTTP service discovery (`GET /targets`, Debian's Prometheus); Alertmanager posts to
the operator's webhook."""

from __future__ import annotations

import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from localcluster import LocalCluster
from localcluster.cluster import free_ports
from localcluster.toolchain import prometheus_binary
from tests.e2e.rerankers import REPO
from tests.e2e.subprocesses import http_json, spawn, stop_process


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
