"""status.calibration from real inference servers: a real operator scrapes a real inference
server (CPU, packaged MiniLM) and GPU sidecar (fake NVML, an H100) on each kwok pod's IP and copies
each pod's calibrated setting and measured pairs/s into the RerankerDeployment's status, per GPU
model, as its own field manager; its state metrics export the same.

Calibration is off by default on CPU: the spec's batching.calibration turns a short one on (two
budgets x two batches in flight, a few seconds), and the pod servers pass the env the operator
rendered into the pod (KUBERANK_CALIBRATION*) to the server, as a real pod would.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from kuberank_operator.model.naming import StatusWriter
from localcluster import LocalCluster
from tests.e2e.autoscaling_support import Namespace, reranker, wait_for
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.pod_servers import PodServers
from tests.e2e.rerankers import install_crd

NAME = "calibrated"
WAIT = 180.0
CALIBRATION = {
    "mode": "on",  # auto would be off on CPU
    "timeLimitSeconds": 4,
    "budgets": [1024, 2048],
    "batchesInFlight": [1, 2],
}


def _calibrated(pool: str) -> dict[str, Any]:
    body = reranker(NAME, pool=pool, autoscaling={"mode": "off"})
    body["spec"]["batching"] = {"calibration": CALIBRATION}  # maxBatchTokens 0: calibrated
    return body


def _managers(cluster: LocalCluster, namespace: str) -> dict[str, set[str]]:
    stored = cluster.kubectl_json("get", "rrd", NAME, "-n", namespace, "--show-managed-fields")
    owned: dict[str, set[str]] = {}
    for entry in stored["metadata"].get("managedFields") or []:
        status = (entry.get("fieldsV1") or {}).get("f:status") or {}
        fields = {key[2:] for key in status if key.startswith("f:")}
        if fields:
            owned.setdefault(entry["manager"], set()).update(fields)
    return owned


def test_status_shows_what_each_gpu_model_runs_at(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    install_crd(local_cluster)
    with Namespace.create(local_cluster, "calibration") as ns:
        operator = OperatorProcess(
            local_cluster, namespaces=[ns.name], log_path=tmp_path / "operator.log"
        )
        try:
            operator.wait_ready()
            ns.apply(_calibrated(ns.pool))
            with PodServers(
                local_cluster,
                namespace=ns.name,
                name=NAME,
                workdir=tmp_path / "pods",
                pod_env_prefixes=("KUBERANK_CALIBRATION",),
            ) as servers:
                wait_for(lambda: len(servers.ready()) == 1, timeout=WAIT, what="pod serving")
                wait_for(
                    lambda: bool(ns.rrd(NAME).get("status", {}).get("calibration")),
                    timeout=WAIT,
                    what="status.calibration written",
                )
                [entry] = ns.rrd(NAME)["status"]["calibration"]
                assert entry["gpuModel"] == "NVIDIA H100 80GB HBM3"  # from the pod's sidecar
                assert entry["state"] == "calibrated"
                assert entry["pods"] == 1
                assert entry["maxBatchTokens"] in (1024, 2048)
                assert entry["batchesInFlight"] in (1, 2)
                assert entry["pairsPerSecond"] > 0
                owners = _managers(local_cluster, ns.name)
                assert owners[StatusWriter.CALIBRATION] == {"calibration"}
                others = {
                    f for m, fs in owners.items() if m != StatusWriter.CALIBRATION for f in fs
                }
                assert "calibration" not in others
                with urllib.request.urlopen(f"{operator.base_url}/metrics", timeout=10) as r:
                    metrics = r.read().decode()
                series = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("kuberank_operator_rerankerdeployment_calibrated_pods{")
                    and f'rerankerdeployment="{NAME}"' in line
                ]
                assert len(series) == 1, metrics
                assert 'gpu_model="NVIDIA H100 80GB HBM3"' in series[0]
                assert series[0].endswith(" 1.0")
        finally:
            operator.stop()
