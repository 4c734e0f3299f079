"""The chart's operator, run on the host: no container runtime here, so the same code runs as a
local process with the Deployment's own arguments, the chart ServiceAccount's token, and its
HTTP endpoints bound to the operator pod's (loopback) IP, where the Service routes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster import processes
from localcluster.components import ComponentSpec
from localcluster.processes import Component
from localcluster.release.clusters import Kube
from localcluster.release.credentials import service_account_kubeconfig

BIN = Path(sys.executable).parent
READY_TIMEOUT = 90.0


@dataclass(frozen=True)
class OperatorPlan:
    """What to run for the chart's operator Deployment, derived from the live object."""

    argv: list[str]
    env: dict[str, str]
    service_account: str
    port: int


def plan_operator(deployment: Mapping[str, Any], *, pod: Mapping[str, Any]) -> OperatorPlan:
    """Pure: the container's command and args (as the chart rendered them) with the overrides a
    host process needs: listen on the pod's IP instead of 0.0.0.0 (flags given last win)."""
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    command = [str(BIN / container["command"][0]), *container["command"][1:]]
    ip = pod["status"]["podIP"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    args = [*container.get("args", []), f"--metrics-host={ip}"]
    if any(a.startswith("--alert-webhook=true") for a in args):
        args.append(f"--alert-webhook-host={ip}")
    env = {"POD_NAME": pod["metadata"]["name"], "POD_NAMESPACE": pod["metadata"]["namespace"]}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return OperatorPlan(
        argv=[*command, *args],
        env=env,
        service_account=spec.get("serviceAccountName", "default"),
        port=int(port),
    )


@dataclass
class HostOperator:
    """A running operator process standing in for the chart's operator pod."""

    component: Component
    popen: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        processes.stop([self.component], popens={self.component.pid: self.popen})


def operator_pod(kube: Kube, *, namespace: str, deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The Deployment's ready pod with an IP (kwok runs it as a fake pod)."""
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        pods = json.loads(
            kube.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
        )["items"]
        for pod in pods:
            conditions = pod.get("status", {}).get("conditions", [])
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            if (
                ready
                and pod["status"].get("podIP")
                and not pod["metadata"].get("deletionTimestamp")
            ):
                return dict(pod)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no ready pod for selector {selector} in {namespace}")
        time.sleep(0.3)


def start_host_operator(
    kube: Kube,
    *,
    namespace: str,
    deployment: str,
    workdir: Path,
    name: str = "kuberank-operator",
    log: Path | None = None,
    die_with_parent: bool = True,
) -> HostOperator:
    """Start the chart's operator on the host and wait until it answers /readyz.

    die_with_parent=False lets it outlive the caller (`make demo`, stopped by cluster-down)."""
    obj = json.loads(
        kube.kubectl("get", "deployment", deployment, "-n", namespace, "-o", "json").stdout
    )
    pod = operator_pod(kube, namespace=namespace, deployment=obj)
    plan = plan_operator(obj, pod=pod)
    kubeconfig = service_account_kubeconfig(
        kube, namespace=namespace, name=plan.service_account, path=workdir / "operator.kubeconfig"
    )
    url = f"http://{pod['status']['podIP']}:{plan.port}"
    spec = ComponentSpec(
        name=name,
        argv=[*plan.argv, f"--kubeconfig={kubeconfig}"],
        health_url=f"{url}/readyz",
        env={**plan.env, "KUBECONFIG": str(kubeconfig)},
    )
    component, popen = processes.start(
        spec, log=log or workdir / f"{name}.log", env=kube.env(), die_with_parent=die_with_parent
    )
    operator = HostOperator(component=component, popen=popen, url=url)
    try:
        processes.wait_healthy(
            component, popen, url=spec.health_url, context=None, timeout=READY_TIMEOUT
        )
    except BaseException:
        operator.stop()
        raise
    return operator
