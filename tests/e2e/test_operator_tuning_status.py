"""TuningApplied from real GPU sidecars: a real operator (builtin evaluator off, autoscaling off)
reads the tuning state of a real sidecar with the fake NVML backend on each kwok pod's IP.

Three resources in one namespace: one whose power limit the fake card takes (Applied), one whose
fake card refuses the setter for lack of permission (Denied, naming the pod and the reason), and
one that asks for no tuning (NotRequested, and its pod is never scraped for it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localcluster import LocalCluster
from tests.e2e.autoscaling_support import Namespace, reranker, wait_for
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.pod_servers import PodServers
from tests.e2e.rerankers import install_crd

WAIT = 60.0
TUNING_FLAGS = ("--power-limit-watts", "300", "--tuning-assume-exclusive")


def _tuned(name: str, *, pool: str, watts: int) -> dict[str, Any]:
    body = reranker(name, pool=pool, autoscaling={"mode": "off"})
    body["spec"]["gpu"]["powerLimitWatts"] = watts
    return body


def _condition(ns: Namespace, name: str) -> dict[str, Any]:
    for cond in ns.rrd(name).get("status", {}).get("conditions") or []:
        if cond["type"] == "TuningApplied":
            return dict(cond)
    return {}


def test_tuning_applied_follows_the_sidecars(local_cluster: LocalCluster, tmp_path: Path) -> None:
    install_crd(local_cluster)
    with Namespace.create(local_cluster, "tuning") as ns:
        operator = OperatorProcess(
            local_cluster, namespaces=[ns.name], log_path=tmp_path / "operator.log", builtin=False
        )
        try:
            operator.wait_ready()
            ns.apply(_tuned("tuned", pool=ns.pool, watts=300))
            ns.apply(_tuned("denied", pool=ns.pool, watts=300))
            ns.apply(reranker("plain", pool=ns.pool, autoscaling={"mode": "off"}))
            with (
                PodServers(
                    local_cluster,
                    namespace=ns.name,
                    name="tuned",
                    workdir=tmp_path / "tuned",
                    inference=False,
                    sidecar_args=TUNING_FLAGS,
                ) as tuned,
                PodServers(
                    local_cluster,
                    namespace=ns.name,
                    name="denied",
                    workdir=tmp_path / "denied",
                    inference=False,
                    sidecar_args=TUNING_FLAGS,
                    fake_profile="h100x1-no-permission",
                ),
            ):
                wait_for(
                    lambda: _condition(ns, "tuned").get("status") == "True",
                    timeout=WAIT,
                    what="rrd/tuned TuningApplied True",
                )
                applied = _condition(ns, "tuned")
                assert applied["reason"] == "Applied"
                assert "power limit 300 W applied on all 1 ready pods" in applied["message"]

                wait_for(
                    lambda: _condition(ns, "denied").get("status") == "False",
                    timeout=WAIT,
                    what="rrd/denied TuningApplied False",
                )
                denied = _condition(ns, "denied")
                pod = ns.pods("denied")[0]["metadata"]["name"]
                assert denied["reason"] == "Denied"
                assert f"pod {pod}: denied (no_permission)" in denied["message"]
                assert [p.pod for p in tuned.serving()] == [ns.pods("tuned")[0]["metadata"]["name"]]

            plain = _condition(ns, "plain")
            assert (plain["status"], plain["reason"]) == ("False", "NotRequested")
        except BaseException:
            print(operator.log_tail(80))
            raise
        finally:
            operator.stop()
