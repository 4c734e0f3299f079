"""The real kuberank-operator as a subprocess against the local cluster: one class for every e2e
suite (reconciling, autoscaling, alerting, tuning) and the benchmarks."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from localcluster import LocalCluster, wait_until
from localcluster.cluster import free_ports
from tests.e2e.subprocesses import BIN, QUIET_ENV, http_json, spawn

WAIT = 90.0

# The admin's admission rules most suites run under: everything the CRD's schema allows, except
# what the rules refuse always (system-* priority classes, reserved annotations other than
# kwok's, which the suites use to script pod statuses). tests/e2e/test_operator_admission.py
# runs the operator under strict rules.
PERMISSIVE_RULES = ("kuberank-e2e", "permissive-admission")
PERMISSIVE_DATA = {
    "tuningNamespaces": "*",
    "allowedHostPathPrefixes": "/",
    "allowedImageRepositories": "ghcr.io/kuberank/,registry.example.com/",
    "allowedServiceTypes": "ClusterIP,NodePort,LoadBalancer",
    "allowedPriorityClassNames": "",
    "allowedPodAnnotationPrefixes": "kwok.x-k8s.io/",
}


def apply_admission_rules(
    cluster: LocalCluster, namespace: str, name: str, data: dict[str, str]
) -> str:
    """The rules as the chart renders them (a ConfigMap); NAMESPACE/NAME for the operator."""
    for obj in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": data,
        },
    ):
        cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(obj)
        )
    return f"{namespace}/{name}"


class OperatorProcess:
    """kuberank-operator watching `namespaces`, started on construction; wait for it with
    `wait_healthy` (alive: a standby replica too) or `wait_ready` (serving)."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        namespaces: Sequence[str],
        log_path: Path,
        builtin: bool = True,
        webhook_secret: str | None = None,
        log_format: str = "text",
        extra_args: Sequence[str] = (),
        admission_rules: str | None = None,
    ) -> None:
        """`admission_rules`: NAMESPACE/NAME of the rules' ConfigMap (default: the permissive
        rules above)."""
        self.metrics_port, self.webhook_port = free_ports(2)
        if admission_rules is None:
            admission_rules = apply_admission_rules(cluster, *PERMISSIVE_RULES, PERMISSIVE_DATA)
        args = [
            str(BIN / "kuberank-operator"),
            "--kubeconfig", str(cluster.kubeconfig),
            "--namespaces", ",".join(namespaces),
            "--metrics-host", "127.0.0.1",
            "--metrics-port", str(self.metrics_port),
            "--log-format", log_format,
            "--builtin-evaluator", "true" if builtin else "false",
            "--admission-configmap", admission_rules,
        ]  # fmt: skip
        if webhook_secret is not None:
            if len(namespaces) != 1:
                raise ValueError("the webhook token secret lives in the one watched namespace")
            args += [
                "--alert-webhook", "true",
                "--alert-webhook-host", "127.0.0.1",
                "--alert-webhook-port", str(self.webhook_port),
                "--alert-webhook-token-secret", f"{namespaces[0]}/{webhook_secret}",
            ]  # fmt: skip
        self.log_path = log_path
        self.process = spawn([*args, *extra_args], log=log_path, env={**cluster.env(), **QUIET_ENV})

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/alerts"

    @property
    def targets_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/targets"

    def wait_healthy(self, timeout: float = WAIT) -> None:
        """Until /healthz answers 200 (the process is up, leading or not)."""
        self._wait_for("/healthz", timeout=timeout)

    def wait_ready(self, timeout: float = WAIT) -> None:
        """Until /readyz answers 200."""
        self._wait_for("/readyz", timeout=timeout)

    def _wait_for(self, path: str, *, timeout: float) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the operator exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                return http_json("GET", f"{self.base_url}{path}", timeout=2)[0] == 200
            return False

        wait_until(answers, timeout=timeout, what=f"the operator's {path} ({self.log_path})")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str) -> float:
        """Sum of the samples on /metrics whose line starts with `name`."""
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in self.metrics().splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under the operator."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown hands the leader Lease back), SIGKILL after 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
