"""The autoscaler in one process against the local control plane: real HTTP metrics endpoints on
loopback pod IPs, the decision code, and the real Kubernetes API adapter, so scale, status
(server-side apply, merged by the API server) and Events are the API server's own; the test's
clock drives the evaluations."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kuberank_operator.autoscaling.alertpayloads import AlertRequest
from kuberank_operator.autoscaling.loop import Autoscaler, AutoscalerOptions
from kuberank_operator.autoscaling.monitoring import MonitoringSync
from kuberank_operator.cluster.actuator import Actuator
from kuberank_operator.cluster.kubeapi import ApiError, KubeApi
from kuberank_operator.model.indexes import Index, World
from kuberank_operator.model.naming import API_VERSION, FIELD_MANAGER, KIND, Owner, StatusWriter
from kuberank_operator.model.observations import PodSummary
from kuberank_operator.model.resources import Key, resource_view
from localcluster import LocalCluster

KEY: Key = ("search", "bge")
IPS = ("127.0.2.1", "127.0.2.2")


def inference_text(
    *, queue: float = 0, oom: float = 0, pairs: float = 0, budget: float = 16384
) -> str:
    """A server calibrated at start-up to 16384 tokens x 2 (its budget ceiling), running at
    `budget` now (lower after OOMs)."""
    return (
        "# TYPE kuberank_inference_token_budget gauge\n"
        f"kuberank_inference_token_budget {budget}\n"
        "# TYPE kuberank_inference_token_budget_ceiling gauge\n"
        "kuberank_inference_token_budget_ceiling 16384\n"
        "# TYPE kuberank_inference_calibrated_max_batch_tokens gauge\n"
        "kuberank_inference_calibrated_max_batch_tokens 16384\n"
        "# TYPE kuberank_inference_calibrated_batches_in_flight gauge\n"
        "kuberank_inference_calibrated_batches_in_flight 2\n"
        "# TYPE kuberank_inference_calibrated_pairs_per_second gauge\n"
        "kuberank_inference_calibrated_pairs_per_second 2771\n"
        "# TYPE kuberank_inference_calibration_info gauge\n"
        'kuberank_inference_calibration_info{device_name="NVIDIA H200",state="calibrated"} 1\n'
        "# TYPE kuberank_inference_queue_depth gauge\n"
        f"kuberank_inference_queue_depth {queue}\n"
        "# TYPE kuberank_cuda_oom_total counter\n"
        f"kuberank_cuda_oom_total {oom}\n"
        "# TYPE kuberank_inference_pairs_total counter\n"
        f"kuberank_inference_pairs_total {pairs}\n"
        "# TYPE kuberank_inference_ready gauge\n"
        "kuberank_inference_ready 1\n"
    )


def sidecar_text(*, util: float = 5) -> str:
    return f'# TYPE DCGM_FI_DEV_GPU_UTIL gauge\nDCGM_FI_DEV_GPU_UTIL{{gpu="0"}} {util}\n'


@dataclass
class FakePod:
    """One pod's two endpoints; tests change the texts between evaluations."""

    inference: str = field(default_factory=inference_text)
    sidecar: str = field(default_factory=sidecar_text)


class ClusterApi:
    """The real Kubernetes API adapter against the local control plane for everything the
    autoscaler writes of the RerankerDeployment (scale subresource, status by server-side apply,
    Events), recording each call. Only the pods are the test's: loopback processes the index
    lists, deleted here (as the Deployment would replace them); and the monitoring objects, whose
    Prometheus Operator CRDs the local cluster does not serve."""

    def __init__(self, real: KubeApi, pods: list[PodSummary], *, serves_monitoring: bool) -> None:
        self._real = real
        self.pods = pods
        self.serves_monitoring = serves_monitoring
        self.calls: list[tuple[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        # Status writes still to fail (as an API server that times out would).
        self.failing_status_writes = 0

    async def apply_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any], manager: str
    ) -> None:
        if self.failing_status_writes:
            self.failing_status_writes -= 1
            raise ApiError(504, "the status write timed out")
        await self._real.apply_status(
            namespace=namespace, name=name, status=status, manager=manager
        )
        self.calls.append(("status", dict(status)))

    async def patch_scale(
        self, *, namespace: str, name: str, from_replicas: int, to_replicas: int, manager: str
    ) -> None:
        await self._real.patch_scale(
            namespace=namespace,
            name=name,
            from_replicas=from_replicas,
            to_replicas=to_replicas,
            manager=manager,
        )
        self.calls.append(("scale", (from_replicas, to_replicas)))

    async def delete_pod(self, *, namespace: str, name: str) -> None:
        kept = [p for p in self.pods if p.name != name]
        gone = len(kept) == len(self.pods)
        self.pods[:] = kept
        self.calls.append(("delete", name))
        if gone:
            raise ApiError(404, f'pods "{name}" not found')

    async def post_event(
        self, *, owner: Owner, type_: str, reason: str, message: str, action: str
    ) -> None:
        await self._real.post_event(
            owner=owner, type_=type_, reason=reason, message=message, action=action
        )
        self.events.append((reason, message))

    async def serves_kinds(self, group_version: str, kinds: Sequence[str]) -> bool:
        return self.serves_monitoring

    async def apply(self, obj: Mapping[str, Any], *, manager: str = FIELD_MANAGER) -> bool:
        self.calls.append(("apply", obj["kind"]))
        return True

    async def delete_object(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> None:
        self.calls.append(("delete-object", kind))

    async def write_lease(self, body: Mapping[str, Any]) -> None:
        raise AssertionError("the autoscaler writes no Lease")


def pod(name: str, ip: str) -> PodSummary:
    return PodSummary(
        namespace="search",
        name=name,
        owner="bge",
        node_name="n",
        phase="Running",
        ready=True,
        deleting=False,
        gpu_requests=(("nvidia.com/gpu", 1),),
        ip=ip,
    )


def rrd(*, mode: str = "builtin", replicas: int = 1, **extra: Any) -> dict[str, Any]:
    """The RerankerDeployment to create (metadata.namespace/name: KEY) and its initial status."""
    spec: dict[str, Any] = {
        "model": {"id": "m", "source": {"hostPath": {"path": "/m"}}},
        "replicas": replicas,
        "autoscaling": {
            "mode": mode,
            "minReplicas": 1,
            "maxReplicas": 3,
            "cooldownSeconds": 30,
            "intervalSeconds": 5,
            "scaleUp": {"queueDepth": 10, "forSeconds": 10},
            "scaleDown": {"gpuUtilization": 20, "forSeconds": 20},
        },
        "oom": {"maxEvents": 2, "windowSeconds": 60, "maxRestartsPerHour": 1},
        **extra,
    }
    return {
        "metadata": {"namespace": KEY[0], "name": KEY[1]},
        "spec": spec,
        "status": {},
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((IPS[0], 0))
        return int(sock.getsockname()[1])


@dataclass
class Harness:
    autoscaler: Autoscaler
    api: ClusterApi
    pods: dict[str, FakePod]
    clock: list[float]
    cluster: LocalCluster
    indices: dict[str, dict[Any, list[Any]]]

    def refresh(self) -> None:
        """Put the stored RerankerDeployment into the index, as kopf's watch would."""
        self.indices[Index.RRD][KEY] = [resource_view(self.body())]

    async def evaluate(self, *, at: float) -> None:
        self.clock[0] = at
        await asyncio.to_thread(self.refresh)
        await self.autoscaler.evaluate(KEY)

    async def act(self, alert: AlertRequest) -> str:
        await asyncio.to_thread(self.refresh)
        return str(await self.autoscaler.act(alert))

    def scales(self) -> list[Any]:
        return [args for what, args in self.api.calls if what == "scale"]

    def body(self) -> dict[str, Any]:
        """The RerankerDeployment as the API server stores it (no reconciler runs here: status
        is {} until the autoscaler writes some)."""
        body: dict[str, Any] = self.cluster.kubectl_json("get", "rrd", KEY[1], "-n", KEY[0])
        body.setdefault("status", {})
        return body

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.cluster.kubectl(
            "patch", "rrd", KEY[1], "-n", KEY[0], "--type=merge", "-p", json.dumps({"spec": spec})
        )

    def status_managers(self) -> dict[str, set[str]]:
        """Per field manager, the top-level status fields (and oom's fields) it owns."""
        owned: dict[str, set[str]] = {}
        stored = self.cluster.kubectl_json(
            "get", "rrd", KEY[1], "-n", KEY[0], "--show-managed-fields"
        )
        for entry in stored["metadata"].get("managedFields") or []:
            status = (entry.get("fieldsV1") or {}).get("f:status") or {}
            fields = {k[2:] for k in status if k.startswith("f:")}
            fields |= {f"oom.{k[2:]}" for k in status.get("f:oom") or {} if k.startswith("f:")}
            if fields:
                owned.setdefault(entry["manager"], set()).update(fields)
        return owned


async def _serve(ip: str, port: int, fake: FakePod, attribute: str) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=getattr(fake, attribute))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, ip, port).start()
    return runner


@pytest.fixture(scope="module")
def search_namespace(local_cluster: LocalCluster, rrd_crd: Path) -> Iterator[str]:
    local_cluster.kubectl("create", "namespace", KEY[0])
    yield KEY[0]
    local_cluster.kubectl("delete", "namespace", KEY[0], "--wait=false")


@pytest.fixture
async def make(local_cluster: LocalCluster, search_namespace: str) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []
    autoscalers: list[Autoscaler] = []
    apis: list[KubeApi] = []

    async def build(
        body: dict[str, Any], *, serves_monitoring: bool = False, loop: bool = False
    ) -> Harness:
        inference_port, sidecar_port = _free_port(), _free_port()
        fakes = {"bge-a": FakePod(), "bge-b": FakePod()}
        for fake, ip in zip(fakes.values(), IPS, strict=True):
            runners.append(await _serve(ip, inference_port, fake, "inference"))
            runners.append(await _serve(ip, sidecar_port, fake, "sidecar"))
        manifest = {"apiVersion": API_VERSION, "kind": KIND, **body}
        local_cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        if body.get("status"):
            local_cluster.kubectl(
                "patch", "rrd", KEY[1], "-n", KEY[0], "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": body["status"]}),
            )  # fmt: skip
        replicas = body["spec"]["replicas"]
        pods = [pod(n, ip) for n, ip in zip(fakes, IPS, strict=True)][:replicas]
        indices: dict[str, dict[Any, list[Any]]] = {Index.RRD: {}, Index.POD: {KEY: pods}}
        real = KubeApi.from_environment(kubeconfig=str(local_cluster.kubeconfig), threads=2)
        apis.append(real)
        api = ClusterApi(real, pods, serves_monitoring=serves_monitoring)
        actuator = Actuator(api)
        clock = [1000.0]
        autoscaler = Autoscaler(
            actuator=actuator,
            world=World(indices),
            options=AutoscalerOptions(inference_port=inference_port, sidecar_port=sidecar_port),
            monitoring=MonitoringSync(api=api, actuator=actuator, clock=lambda: clock[0]),
            clock=lambda: clock[0],
        )
        h = Harness(
            autoscaler=autoscaler,
            api=api,
            pods=fakes,
            clock=clock,
            cluster=local_cluster,
            indices=indices,
        )
        await asyncio.to_thread(h.refresh)
        if loop:
            await autoscaler.start()
        autoscalers.append(autoscaler)
        return h

    yield build
    for autoscaler in autoscalers:
        await autoscaler.stop()
    for runner in runners:
        await runner.cleanup()
    for real in apis:
        real.close()
    local_cluster.kubectl("delete", "rrd", KEY[1], "-n", KEY[0], "--ignore-not-found")


async def test_backlog_scales_up_through_the_scale_subresource(make: Any) -> None:
    h: Harness = await make(rrd())
    h.pods["bge-a"].inference = inference_text(queue=40)
    for t in (1000, 1005, 1010, 1015):
        await h.evaluate(at=t)
    # Held from 1000; 10 s later one step, proportional to 40/10 but at most doubling.
    assert h.scales() == [(1, 2)]
    last = h.body()["status"]["lastScale"]
    assert (last["from"], last["to"], last["time"]) == (1, 2, "1970-01-01T00:16:50Z")
    assert last["reason"] == "queue depth 40 > 10 for 10s (builtin evaluator)"
    assert [reason for reason, _ in h.api.events] == ["ScaledUp"]
    assert h.body()["spec"]["replicas"] == 2


async def test_external_mode_never_scales(make: Any) -> None:
    h: Harness = await make(rrd(mode="external"))
    h.pods["bge-a"].inference = inference_text(queue=400)
    for t in range(1000, 1100, 5):
        await h.evaluate(at=t)
    assert h.scales() == []
    alert = AlertRequest(
        alertname="KuberankQueueBacklog",
        action="scale-up",
        status="firing",
        namespace="search",
        name="bge",
        pod=None,
        fingerprint="f",
        starts_at="",
        summary="",
    )
    await asyncio.to_thread(h.patch_spec, {"monitoring": {"alertWebhook": True}})
    assert await h.act(alert) == "unchanged: spec.autoscaling.mode is external"
    assert h.scales() == []


async def test_idle_pods_scale_down_only_when_every_pod_reports(make: Any) -> None:
    h: Harness = await make(rrd(replicas=2))
    h.pods["bge-b"].sidecar = ""  # one sidecar reports no utilization
    for t in range(1000, 1100, 5):
        await h.evaluate(at=t)
    assert h.scales() == []
    h.pods["bge-b"].sidecar = sidecar_text(util=3)
    for t in range(1100, 1130, 5):
        await h.evaluate(at=t)
    assert h.scales() == [(2, 1)]
    assert "GPU utilization 4 % < 20 % and queue empty" in h.body()["status"]["lastScale"]["reason"]


async def test_cuda_ooms_restart_once_then_the_hourly_limit_holds(make: Any) -> None:
    h: Harness = await make(rrd(replicas=2))
    await h.evaluate(at=1000)
    h.pods["bge-a"].inference = inference_text(oom=2)
    await h.evaluate(at=1005)
    assert [a for w, a in h.api.calls if w == "delete"] == ["bge-a"]
    oom = h.body()["status"]["oom"]
    assert oom["restarts"] == 1
    assert oom["lastPod"] == "bge-a"
    assert oom["restartsLastHour"] == 1
    assert oom["lastReason"].startswith("2 CUDA out-of-memory errors in 60s (limit 2)")
    h.pods["bge-b"].inference = inference_text(oom=5)
    for t in (1010, 1015, 1020):
        await h.evaluate(at=t)
    assert [a for w, a in h.api.calls if w == "delete"] == ["bge-a"]
    held = [m for reason, m in h.api.events if reason == "RestartHeldBack"]
    assert len(held) == 1, "held-back restarts are reported once per pod, not every interval"
    assert "bge-b" in held[0]
    assert "maxRestartsPerHour=1" in held[0]


async def test_a_new_process_keeps_the_hourly_limit_from_status(make: Any) -> None:
    body = rrd(replicas=2)
    body["status"]["oom"] = {
        "restarts": 4,
        "restartsLastHour": 1,
        "lastRestartTime": "1970-01-01T00:16:00Z",
    }
    h: Harness = await make(body)
    await h.evaluate(at=1000)
    h.pods["bge-a"].inference = inference_text(oom=3)
    await h.evaluate(at=1005)
    assert [w for w, _ in h.api.calls if w == "delete"] == []
    # An hour after that restart the limit frees up (for new OOMs: old ones left the window).
    await h.evaluate(at=960 + 3600)
    assert [w for w, _ in h.api.calls if w == "delete"] == []
    h.pods["bge-a"].inference = inference_text(oom=6)
    await h.evaluate(at=960 + 3605)
    assert [a for w, a in h.api.calls if w == "delete"] == ["bge-a"]
    assert h.body()["status"]["oom"]["restarts"] == 5


async def test_webhook_actions_share_bounds_cooldown_and_opt_in(make: Any) -> None:
    h: Harness = await make(rrd())

    def alert(action: str, *, name: str = "bge", pod: str | None = None) -> AlertRequest:
        return AlertRequest(
            alertname="KuberankQueueBacklog" if action == "scale-up" else "KuberankCudaOomRepeated",
            action=action,  # type: ignore[arg-type]
            status="firing",
            namespace="search",
            name=name,
            pod=pod,
            fingerprint="f",
            starts_at="",
            summary="Pairs queue up",
        )

    assert await h.act(alert("scale-up", name="nope")) == (
        "ignored: unknown RerankerDeployment search/nope"
    )
    assert await h.act(alert("scale-up")) == ("ignored: spec.monitoring.alertWebhook is false")
    await asyncio.to_thread(h.patch_spec, {"monitoring": {"alertWebhook": True}})
    assert await h.act(alert("scale-up")) == "acted: scaled 1 -> 2"
    assert h.body()["status"]["lastScale"]["reason"] == (
        "alert KuberankQueueBacklog: Pairs queue up (Alertmanager webhook)"
    )
    assert (await h.act(alert("scale-up"))).startswith("unchanged: inside the cooldown")
    # The builtin evaluator honours the cooldown the webhook started.
    h.pods["bge-a"].inference = inference_text(queue=100)
    for t in (1000, 1005, 1010, 1015):
        await h.evaluate(at=t)
    assert h.scales() == [(1, 2)]
    # The Deployment's second pod exists and is ready: one may be restarted.
    h.api.pods.append(pod("bge-b", IPS[1]))
    outcome = await h.act(alert("restart-pod", pod="bge-a"))
    assert outcome == "acted: restarted pod bge-a"
    assert (await h.act(alert("restart-pod", pod="bge-a"))).startswith(
        "unchanged: pod bge-a is gone"
    )


async def test_a_webhook_alert_sent_again_after_a_failed_status_write_scales_once(
    make: Any,
) -> None:
    body = rrd(monitoring={"alertWebhook": True})
    body["spec"]["autoscaling"] |= {"cooldownSeconds": 0, "maxReplicas": 5}
    h: Harness = await make(body)
    first = AlertRequest(
        alertname="KuberankQueueBacklog",
        action="scale-up",
        status="firing",
        namespace=KEY[0],
        name=KEY[1],
        pod=None,
        fingerprint="3f9e",
        starts_at="2026-12-01T10:00:00Z",
        summary="Pairs queue up",
    )
    h.api.failing_status_writes = 1
    assert await h.act(first) == "acted: scaled 1 -> 2"
    assert "lastScale" not in h.body()["status"]
    # Alertmanager sends it again (no cooldown to hide behind): no second step.
    assert (await h.act(first)).startswith("unchanged: already acted on this alert")
    second = dataclasses.replace(first, starts_at="2026-12-01T11:00:00Z")
    assert await h.act(second) == "acted: scaled 2 -> 3"
    # The API server keeps the identity (the CRD has the field): a restarted operator reads it.
    assert h.body()["status"]["lastScale"]["alert"] == {
        "name": "KuberankQueueBacklog",
        "fingerprint": "3f9e",
        "startsAt": "2026-12-01T11:00:00Z",
    }
    restarted = Autoscaler(
        actuator=Actuator(h.api),
        world=World(h.indices),
        options=AutoscalerOptions(),
        clock=lambda: h.clock[0],
    )
    await asyncio.to_thread(h.refresh)
    assert str(await restarted.act(second)).startswith("unchanged: already acted")
    assert h.scales() == [(1, 2), (2, 3)]
    assert h.body()["spec"]["replicas"] == 3


async def test_monitoring_objects_follow_the_spec_where_the_crds_exist(make: Any) -> None:
    body = rrd(monitoring={"podMonitor": True, "prometheusRule": True})
    h: Harness = await make(body, serves_monitoring=True)
    await h.evaluate(at=1000)
    await h.evaluate(at=1005)
    applies = [a for w, a in h.api.calls if w == "apply"]
    assert sorted(applies) == ["PodMonitor", "PrometheusRule"], "applied once, not every time"
    await asyncio.to_thread(h.patch_spec, {"monitoring": {"podMonitor": False}})
    await h.evaluate(at=1010)
    assert [a for w, a in h.api.calls if w == "delete-object"] == ["PodMonitor"]


async def test_no_monitoring_objects_without_the_crds(make: Any) -> None:
    h: Harness = await make(rrd(monitoring={"podMonitor": True}), serves_monitoring=False)
    await h.evaluate(at=1000)
    assert [w for w, _ in h.api.calls if w in ("apply", "delete-object")] == []


async def test_a_pod_lowering_its_token_budget_is_reported_in_status(make: Any) -> None:
    h: Harness = await make(rrd(replicas=2))
    await h.evaluate(at=1000)
    assert "oom" not in h.body()["status"]
    h.pods["bge-b"].inference = inference_text(budget=4096)
    await h.evaluate(at=1005)
    await h.evaluate(at=1010)
    assert h.body()["status"]["oom"]["reducedMaxBatchTokens"] == 4096
    reduced = [m for reason, m in h.api.events if reason == "TokenBudgetReduced"]
    assert len(reduced) == 1
    assert "lowered its batch token budget to 4096" in reduced[0]
    h.pods["bge-b"].inference = inference_text(budget=16384)
    await h.evaluate(at=1015)
    assert h.body()["status"]["oom"]["reducedMaxBatchTokens"] == 0


async def test_the_loop_evaluates_on_its_own_every_interval(make: Any) -> None:
    body = rrd()
    # The CRD's shortest interval (the API server refuses a shorter one).
    body["spec"]["autoscaling"]["intervalSeconds"] = 5
    body["spec"]["autoscaling"]["scaleUp"]["forSeconds"] = 1
    h: Harness = await make(body, loop=True)
    h.pods["bge-a"].inference = inference_text(queue=40)
    # The harness's clock stands still unless moved: move it as time passes (and keep the
    # index as fresh as the watch would).
    started = time.monotonic()
    deadline = started + 30
    while not h.scales() and time.monotonic() < deadline:
        h.clock[0] = 1000 + (time.monotonic() - started)
        await asyncio.to_thread(h.refresh)
        await asyncio.sleep(0.05)
    assert h.scales() == [(1, 2)]


async def test_each_status_field_has_one_writer(make: Any) -> None:
    """Server-side apply with one field manager per writer: the API server records who owns
    what, and no status field has two owners."""
    h: Harness = await make(rrd(replicas=2, monitoring={"alertWebhook": True}))
    await h.evaluate(at=1000)
    h.pods["bge-a"].inference = inference_text(oom=2)
    h.pods["bge-b"].inference = inference_text(budget=4096)
    await h.evaluate(at=1005)
    await h.evaluate(at=1010)
    scale_up = AlertRequest(
        alertname="KuberankQueueBacklog",
        action="scale-up",
        status="firing",
        namespace=KEY[0],
        name=KEY[1],
        pod=None,
        fingerprint="f",
        starts_at="",
        summary="Pairs queue up",
    )
    assert await h.act(scale_up) == "acted: scaled 2 -> 3"
    owners = h.status_managers()
    restart_record = {"restarts", "lastRestartTime", "lastReason", "lastPod", "restartsLastHour"}
    assert owners[StatusWriter.AUTOSCALER] == {"lastScale"}
    assert owners[StatusWriter.OOM_RESTARTS] == {"oom"} | {f"oom.{f}" for f in restart_record}
    assert owners[StatusWriter.TOKEN_BUDGET] == {"oom", "oom.reducedMaxBatchTokens"}
    assert owners[StatusWriter.CALIBRATION] == {"calibration"}
    leaves = [f for fields in owners.values() for f in fields if f != "oom"]
    assert len(leaves) == len(set(leaves)), owners
    status = h.body()["status"]
    assert status["oom"]["reducedMaxBatchTokens"] == 4096
    assert status["oom"]["lastPod"] == "bge-a"
    assert status["lastScale"]["to"] == 3
    assert status["calibration"] == [
        {
            "gpuModel": "NVIDIA H200",  # the fake sidecar names no model: the server's name
            "state": "calibrated",
            "maxBatchTokens": 16384,
            "batchesInFlight": 2,
            "pairsPerSecond": 2771,
            "pods": 1,  # bge-a was restarted (deleted) for its OOMs: bge-b is left
        }
    ]
