"""A real inference server and GPU sidecar (fake NVML backend) bound to each kwok pod's loopback
IP, following the pods of one RerankerDeployment, and a load generator against them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster import LocalCluster
from tests.e2e.rerankers import OWNER_LABEL
from tests.e2e.subprocesses import BIN, QUIET_ENV, http_json, spawn, stop_process

log = logging.getLogger(__name__)

INFERENCE_PORT = 8080
SIDECAR_PORT = 9400


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
        pod_env_prefixes: Sequence[str] = (),
    ) -> None:
        self._inference = inference
        # The inference container's env vars (as the operator rendered them into the pod) whose
        # names start with these reach the server as they would in a real pod; with any given,
        # the budget is no longer fixed here (the pod's env, or the server, decides).
        self._pod_env_prefixes = tuple(pod_env_prefixes)
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

    def _pods(self) -> list[tuple[str, str, dict[str, str]]]:
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
                running.append((pod["metadata"]["name"], status["podIP"], self._pod_env(pod)))
        return running

    def _pod_env(self, pod: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for container in pod["spec"].get("containers") or []:
            if container.get("name") != "inference":
                continue
            for item in container.get("env") or []:
                name, value = str(item.get("name", "")), item.get("value")
                if isinstance(value, str) and name.startswith(self._pod_env_prefixes or ("\0",)):
                    env[name] = value
        return env

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                pods = {pod: (ip, env) for pod, ip, env in self._pods()}
                with self._lock:
                    for gone in set(self._served) - set(pods):
                        self._stop_pod(self._served.pop(gone))
                    for pod, (ip, pod_env) in pods.items():
                        if pod not in self._served:
                            self._served[pod] = self._start_pod(pod, ip, pod_env)
                            self.started.append(pod)
            except Exception:
                log.exception("following pods failed")
            self._stop.wait(1.0)

    def _start_pod(self, pod: str, ip: str, pod_env: dict[str, str]) -> PodProcesses:
        logs = self._workdir / pod
        logs.mkdir(parents=True, exist_ok=True)
        state_file = logs / "gpu-state.json"
        state_file.write_text(json.dumps({"gpus": {"0": self._gpu_defaults}}))
        env = {**os.environ, **QUIET_ENV, **pod_env}
        budget = () if self._pod_env_prefixes else ("--max-batch-tokens", "2048")
        inference_args = [
            str(BIN / "kuberank-inference"),
            "--host", ip,
            "--port", str(INFERENCE_PORT),
            "--debug-fault-injection",
            *budget,
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
