"""The builtin evaluator against real processes: a real operator scrapes a real inference server
and GPU sidecar on each kwok pod's loopback IP, and scales and restarts through the real API.

One scenario, in order: load scales up; idleness scales down after the cooldown; injected CUDA
OOMs restart that pod once; a second pod hitting OOMs is held back by maxRestartsPerHour.
"""

from __future__ import annotations

from pathlib import Path

from localcluster import LocalCluster
from localcluster.cluster import wait_until
from tests.e2e.autoscaling_support import Namespace, reranker, wait_for
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.pod_servers import Load, PodServers, send_requests
from tests.e2e.rerankers import install_crd
from tests.e2e.subprocesses import http_json

NAME = "rr"
COOLDOWN_S = 20
WAIT = 180.0


def _oom_total(url: str) -> float:
    status, text = http_json("GET", f"{url}/metrics")
    assert status == 200
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in str(text).splitlines()
        if line.startswith("kuberank_cuda_oom_total")
    )


def test_builtin_evaluator_scales_and_restarts(local_cluster: LocalCluster, tmp_path: Path) -> None:
    install_crd(local_cluster)
    with Namespace.create(local_cluster, "autoscale") as ns:
        operator = OperatorProcess(
            local_cluster, namespaces=[ns.name], log_path=tmp_path / "operator.log"
        )
        try:
            operator.wait_ready()
            ns.apply(
                reranker(
                    NAME,
                    pool=ns.pool,
                    autoscaling={
                        "mode": "builtin",
                        "minReplicas": 1,
                        "maxReplicas": 2,
                        "cooldownSeconds": COOLDOWN_S,
                        "intervalSeconds": 5,
                        # Latency and utilization thresholds out of reach: the queue decides.
                        "scaleUp": {
                            "queueDepth": 16,
                            "p99LatencyMs": 600000,
                            "gpuUtilization": 95,
                            "forSeconds": 5,
                        },
                        "scaleDown": {"gpuUtilization": 30, "forSeconds": 10},
                    },
                    oom={"maxEvents": 3, "windowSeconds": 120, "maxRestartsPerHour": 1},
                )
            )
            with PodServers(
                local_cluster, namespace=ns.name, name=NAME, workdir=tmp_path / "pods"
            ) as servers:
                wait_for(lambda: len(servers.ready()) == 1, timeout=WAIT, what="pod 1 serving")
                assert ns.replicas(NAME) == 1

                # 1. Load: pairs queue up in the inference server; the operator adds a pod.
                with Load(servers) as load:
                    wait_for(lambda: ns.replicas(NAME) == 2, timeout=WAIT, what="scale-up to 2")
                assert load.sent > 0
                up = ns.rrd(NAME)["status"]["lastScale"]
                assert (up["from"], up["to"]) == (1, 2)
                assert "queue depth" in up["reason"]
                assert "builtin evaluator" in up["reason"]
                assert ns.events("ScaledUp"), "no ScaledUp event on the RerankerDeployment"

                # 2. Idle (queue empty, GPU at 5 %): one pod goes, after the cooldown, and only
                # once both pods report (a starting pod's missing metrics block scale-down).
                wait_for(lambda: ns.replicas(NAME) == 1, timeout=WAIT, what="scale-down to 1")
                down = ns.rrd(NAME)["status"]["lastScale"]
                assert (down["from"], down["to"]) == (2, 1)
                assert "GPU utilization" in down["reason"]
                assert down["time"] > up["time"]
                assert ns.events("ScaledDown")

                # 3. CUDA OOMs in one pod: it is deleted once and replaced.
                wait_for(
                    lambda: len(servers.serving()) == 1 and len(servers.ready()) == 1,
                    timeout=WAIT,
                    what="one pod serving after scale-down",
                )
                victim = servers.ready()[0]
                status, _ = http_json("POST", f"{victim.base_url}/debug/inject-oom", {"count": 3})
                assert status == 200
                wait_until(
                    lambda: bool(send_requests(victim, 1)) and _oom_total(victim.base_url) >= 3,
                    timeout=60,
                    what="three CUDA OOMs counted",
                    interval=0.2,
                )
                wait_for(
                    lambda: (ns.rrd(NAME)["status"].get("oom") or {}).get("restarts") == 1,
                    timeout=WAIT,
                    what="status.oom.restarts = 1",
                )
                oom = ns.rrd(NAME)["status"]["oom"]
                assert oom["lastPod"] == victim.pod
                assert "CUDA out-of-memory" in oom["lastReason"]
                assert victim.pod not in {p["metadata"]["name"] for p in ns.pods(NAME)}
                assert any(victim.pod in e["message"] for e in ns.events("PodRestarted"))

                # 4. The replacement keeps hitting OOMs: maxRestartsPerHour=1 holds it back.
                wait_for(
                    lambda: any(p.pod != victim.pod for p in servers.ready()),
                    timeout=WAIT,
                    what="the replacement pod serving",
                )
                second = next(p for p in servers.ready() if p.pod != victim.pod)
                http_json("POST", f"{second.base_url}/debug/inject-oom", {"count": 3})
                wait_until(
                    lambda: bool(send_requests(second, 1)) and _oom_total(second.base_url) >= 3,
                    timeout=60,
                    what="three CUDA OOMs counted on the replacement",
                    interval=0.2,
                )
                wait_for(
                    lambda: any(second.pod in e["message"] for e in ns.events("RestartHeldBack")),
                    timeout=WAIT,
                    what="a RestartHeldBack event for the replacement",
                )
                assert second.pod in {p["metadata"]["name"] for p in ns.pods(NAME)}
                assert ns.rrd(NAME)["status"]["oom"]["restarts"] == 1
                held = next(e for e in ns.events("RestartHeldBack") if second.pod in e["message"])
                assert "maxRestartsPerHour=1" in held["message"]
        except BaseException:
            print(operator.log_tail(80))
            raise
        finally:
            operator.stop()
