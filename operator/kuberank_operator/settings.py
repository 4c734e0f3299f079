"""The operator's settings, as the command line and environment give them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    # Namespaces to watch; empty means all namespaces (cluster-wide).
    namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    log_format: str = "json"
    log_level: str = "info"
    # The pod's probe and scrape port listens on every interface.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    workers: int = 4
    api_threads: int = 8
    resync_seconds: float = 300.0
    # Leader election on a Lease: off for one replica; with two or more, only the Lease holder
    # reconciles and acts, the others keep warm indexes and take over when it goes.
    leader_election: bool = False
    leader_election_namespace: str = "default"
    leader_election_lease: str = "kuberank-operator"
    leader_election_seconds: int = 15
    sidecar_pod_resources: bool = False
    # Autoscaling and OOM restarts (responders.py): the builtin evaluator scrapes pods and
    # decides; the Alertmanager webhook receiver acts on kuberank alerts when enabled.
    builtin_evaluator: bool = True
    alert_webhook: bool = False
    alert_webhook_host: str = "0.0.0.0"
    alert_webhook_port: int = 8443
    alert_webhook_token_secret: str = ""
    alert_webhook_token_key: str = "token"
    runbook_base_url: str = "https://github.com/kuberank/kuberank/blob/main/docs/runbooks"

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces
