"""Run a Helm hook pod's container on the host, the way a kubelet would, and report its exit
through the pod's status. kwok has no container runtime; the pod carries the annotation
kwok.x-k8s.io/status=custom so kwok leaves its status to us.

Service names in the command are resolved the way cluster DNS and kube-proxy would route them:
to a ready pod the Service selects, on the target port (a pod IP on loopback, where a real
process of ours listens). The Service's EndpointSlices cannot help: the API server refuses
loopback addresses in them, so the endpoint controllers here leave them empty."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localcluster.release.clusters import Kube

Route = tuple[str, int]
_URL = re.compile(r"(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]+):(?P<port>\d+)")
OUTPUT_TAIL = 400


def service_routes(
    *, namespace: str, services: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> dict[Route, Route]:
    """Pure: (service DNS name, service port) -> (ready pod IP, target port), as the endpoint
    controller would pick them: pods matching the selector, Ready, with an IP."""
    routes: dict[Route, Route] = {}
    for service in services:
        selector = service["spec"].get("selector") or {}
        name = service["metadata"]["name"]
        chosen = [p for p in pods if selector and _selects(selector, p) and _ready(p)]
        for port in service["spec"].get("ports", []):
            for pod in chosen:
                target = _target_port(pod, port.get("targetPort", port["port"]))
                if target is None:
                    continue
                for host in (name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                             f"{name}.{namespace}.svc.cluster.local"):  # fmt: skip
                    routes[(host, int(port["port"]))] = (str(pod["status"]["podIP"]), target)
                break
    return routes


def _selects(selector: Mapping[str, str], pod: Mapping[str, Any]) -> bool:
    labels = pod["metadata"].get("labels", {})
    return all(labels.get(key) == value for key, value in selector.items())


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status", {})
    conditions = status.get("conditions", [])
    return bool(status.get("podIP")) and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def _target_port(pod: Mapping[str, Any], target: int | str) -> int | None:
    if isinstance(target, int):
        return target
    for container in pod["spec"]["containers"]:
        for port in container.get("ports", []):
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def rewrite_service_urls(argv: Sequence[str], routes: Mapping[Route, Route]) -> list[str]:
    """Pure: every http(s)://service:port in argv pointed at the endpoint behind it."""

    def replace(match: re.Match[str]) -> str:
        target = routes.get((match["host"], int(match["port"])))
        if target is None:
            return match.group(0)
        return f"{match['scheme']}://{target[0]}:{target[1]}"

    return [_URL.sub(replace, arg) for arg in argv]


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def terminated_status(
    *, container: Mapping[str, Any], exit_code: int, started: str, finished: str, output: str
) -> dict[str, Any]:
    """Pure: the pod status a kubelet reports for a finished restartPolicy=Never pod."""
    return {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "message": output[-OUTPUT_TAIL:],
                        "startedAt": started,
                        "finishedAt": finished,
                    }
                },
            }
        ],
    }


@dataclass(frozen=True)
class HookRun:
    """What the hook pod's container did."""

    argv: list[str]
    exit_code: int
    output: str


def run_hook_pod(kube: Kube, *, namespace: str, name: str, python: str) -> HookRun:
    """Run the pod's one container on the host and write its outcome into the pod's status."""
    pod = json.loads(kube.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
    container = pod["spec"]["containers"][0]
    argv = [*container.get("command", []), *container.get("args", [])]
    if argv and argv[0] in {"python", "python3"}:
        argv[0] = python  # the image's Python is the venv's here
    services = json.loads(kube.kubectl("get", "services", "-n", namespace, "-o", "json").stdout)
    pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
    routes = service_routes(namespace=namespace, services=services["items"], pods=pods["items"])
    started = _utc_now()
    argv = rewrite_service_urls(argv, routes)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    status = terminated_status(
        container=container,
        exit_code=done.returncode,
        started=started,
        finished=_utc_now(),
        output=done.stdout + done.stderr,
    )
    kube.kubectl(
        "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    return HookRun(argv=argv, exit_code=done.returncode, output=done.stdout + done.stderr)
