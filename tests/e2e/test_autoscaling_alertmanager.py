"""The Prometheus path against real processes: Prometheus (3.x built from Go modules; Debian's
2.42 lacks kubernetes_sd) finds the pods through kubernetes_sd on the local API server as a
ServiceAccount that may only list and watch the namespace's pods, scrapes the real inference
server and sidecar on each pod IP and evaluates the rules rendered from the RerankerDeployment;
Debian's Alertmanager posts to the operator's webhook with the bearer token from a Secret.
Forged alerts get 401. The alert that scaled is named in status.lastScale.alert; sent again
beside a malformed alert and one outside --alert-webhook-namespaces, each gets its own answer
and nothing changes. With Prometheus stopped, the builtin evaluator decides.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from localcluster import LocalCluster
from tests.e2e.autoscaling_support import Namespace, operator_rules_yaml, reranker, wait_for
from tests.e2e.monitoring import KubernetesDiscovery, Monitoring
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.pod_servers import INFERENCE_PORT, SIDECAR_PORT, Load, PodServers
from tests.e2e.rerankers import install_crd
from tests.e2e.subprocesses import http_json

pytestmark = pytest.mark.prometheus

NAME = "rr"
WAIT = 180.0
AUTOSCALING = {
    "mode": "builtin",
    "minReplicas": 1,
    "maxReplicas": 2,
    "cooldownSeconds": 10,
    "intervalSeconds": 5,
    "scaleUp": {"queueDepth": 16, "p99LatencyMs": 600000, "gpuUtilization": 95, "forSeconds": 5},
    "scaleDown": {"gpuUtilization": 30, "forSeconds": 10},
}


def _forged_alert(namespace: str) -> dict[str, object]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "kuberank",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:1",
        "groupKey": "forged",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "KuberankQueueBacklog",
                    "kuberank_action": "scale-up",
                    "namespace": namespace,
                    "rerankerdeployment": NAME,
                },
                "annotations": {"summary": "forged"},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "f0f0",
            }
        ],
    }


def test_alertmanager_webhook_path(local_cluster: LocalCluster, tmp_path: Path) -> None:
    install_crd(local_cluster)
    token = secrets.token_hex(16)
    with Namespace.create(local_cluster, "alerting") as ns:
        local_cluster.kubectl(
            "create", "secret", "generic", "alert-token", "-n", ns.name,
            f"--from-literal=token={token}",
        )  # fmt: skip
        # Phase 1: only Alertmanager decides (the builtin evaluator is off).
        operator = OperatorProcess(
            local_cluster,
            namespaces=[ns.name],
            log_path=tmp_path / "operator-webhook.log",
            builtin=False,
            webhook_secret="alert-token",
            extra_args=["--alert-webhook-namespaces", ns.name],
        )
        manifest = reranker(
            NAME, pool=ns.pool, autoscaling=AUTOSCALING, monitoring={"alertWebhook": True}
        )
        monitoring = None
        try:
            operator.wait_ready()
            ns.apply(manifest)
            monitoring = Monitoring(
                rules_yaml=operator_rules_yaml(manifest, ns.name),
                webhook_url=operator.webhook_url,
                kubernetes=KubernetesDiscovery.service_account(
                    local_cluster, namespace=ns.name, workdir=tmp_path / "monitoring"
                ),
                token=token,
                workdir=tmp_path / "monitoring",
            )
            with PodServers(
                local_cluster, namespace=ns.name, name=NAME, workdir=tmp_path / "pods"
            ) as servers:
                wait_for(lambda: len(servers.ready()) == 1, timeout=WAIT, what="pod 1 serving")
                wait_for(
                    lambda: monitoring is not None and monitoring.targets_up() == 2,
                    timeout=WAIT,
                    what="Prometheus scraping the pod's inference and sidecar ports",
                )
                # both targets come from kubernetes_sd (pod metadata), on the pod's own IP
                (pod,) = servers.ready()
                found = {
                    (
                        target["discoveredLabels"].get("__meta_kubernetes_pod_name"),
                        target["scrapeUrl"],
                        target["health"],
                    )
                    for target in monitoring.active_targets()
                    if target["scrapePool"] == "kuberank-pods"
                }
                assert found == {
                    (pod.pod, f"http://{pod.ip}:{port}/metrics", "up")
                    for port in (INFERENCE_PORT, SIDECAR_PORT)
                }
                queue = monitoring.query(
                    f'kuberank_inference_queue_depth{{namespace="{ns.name}",'
                    f'rerankerdeployment="{NAME}"}}'
                )
                assert queue, "the queue-depth series lacks the labels the rules group by"

                # Forged alerts: no token, a wrong token. 401, and nothing changes.
                forged = _forged_alert(ns.name)
                status, body = http_json("POST", operator.webhook_url, forged)
                assert status == 401
                assert body["error_type"] == "Unauthorized"
                status, _ = http_json(
                    "POST",
                    operator.webhook_url,
                    forged,
                    headers={"Authorization": "Bearer not-the-token"},
                )
                assert status == 401
                assert ns.replicas(NAME) == 1
                assert "lastScale" not in (ns.rrd(NAME).get("status") or {})

                # Load: Prometheus fires KuberankQueueBacklog, Alertmanager posts, the operator
                # scales through the scale subresource.
                with Load(servers):
                    wait_for(lambda: ns.replicas(NAME) == 2, timeout=WAIT, what="scale-up to 2")
                last = ns.rrd(NAME)["status"]["lastScale"]
                assert (last["from"], last["to"]) == (1, 2)
                assert "alert KuberankQueueBacklog" in last["reason"]
                assert operator.metric('kuberank_operator_scale_decisions_total{direction="up",'
                                       'source="alert"}') == 1  # fmt: skip

                # The same alert again, now with the token: inside the cooldown, no change.
                status, body = http_json(
                    "POST",
                    operator.webhook_url,
                    forged,
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert status == 200
                assert body["results"][0]["outcome"].startswith("unchanged")
                assert ns.replicas(NAME) == 2

                # The alert that scaled is named in status, by Alertmanager's own fingerprint.
                # That alert sent again, beside a malformed one and one for a namespace outside
                # --alert-webhook-namespaces: 200 with one answer each, and nothing changes.
                acted = last["alert"]
                assert acted["name"] == "KuberankQueueBacklog"
                assert acted["fingerprint"]
                assert acted["startsAt"]
                again = {
                    **forged["alerts"][0],  # type: ignore[index]
                    "fingerprint": acted["fingerprint"],
                    "startsAt": acted["startsAt"],
                }
                foreign = {
                    **again,
                    "labels": {**again["labels"], "namespace": "kube-system"},
                    "fingerprint": "f1f1",
                }
                malformed = {**again, "labels": {**again["labels"], "kuberank_action": "explode"}}
                status, body = http_json(
                    "POST",
                    operator.webhook_url,
                    {**forged, "alerts": [foreign, malformed, again]},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert status == 200
                results = [r["result"] for r in body["results"]]
                assert results == ["refused", "invalid", "unchanged"], body
                assert ns.replicas(NAME) == 2
                refused = 'kuberank_operator_alerts_total{action="scale-up",outcome="refused"}'
                assert operator.metric(refused) == 1

                # Phase 2: Prometheus gone, the builtin evaluator alone scales down when idle.
                monitoring.stop_prometheus()
                operator.stop()
                operator = OperatorProcess(
                    local_cluster,
                    namespaces=[ns.name],
                    log_path=tmp_path / "operator-builtin.log",
                    builtin=True,
                    webhook_secret="alert-token",
                )
                operator.wait_ready()
                wait_for(lambda: ns.replicas(NAME) == 1, timeout=WAIT, what="scale-down to 1")
                last = ns.rrd(NAME)["status"]["lastScale"]
                assert (last["from"], last["to"]) == (2, 1)
                assert "builtin evaluator" in last["reason"]
        except BaseException:
            print(operator.log_tail(80))
            raise
        finally:
            operator.stop()
            if monitoring is not None:
                monitoring.stop()
