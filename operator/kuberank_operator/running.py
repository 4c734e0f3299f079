"""Start and stop what runs beside kopf's watches: the reconcile workers and the HTTP endpoint.

Also the one place that configures kopf (logging, server-side selectors) and runs it. kopf
always runs standalone: with several replicas, leader election on a Lease (electing.py) decides
which one works. kopf's own peering would pause kopf's watchers only, not our workers, the
builtin evaluator or the webhook; with the Lease, standbys keep warm indexes and take over fast.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from kuberank_operator.autoscaling.responders import (
    ResponderOptions,
    start_responders,
    stop_responders,
)
from kuberank_operator.cluster.actuator import Actuator
from kuberank_operator.cluster.admission_source import AdmissionSource, configmap_ref
from kuberank_operator.cluster.electing import ElectionOptions, Elector
from kuberank_operator.cluster.kubeapi import KubeApi
from kuberank_operator.model import naming
from kuberank_operator.model.indexes import World, require_indexes
from kuberank_operator.reconcile.controller import Controller, ControllerOptions
from kuberank_operator.reconcile.tuningwatch import TuningWatch
from kuberank_operator.rendering.children import RenderOptions
from kuberank_operator.settings import OperatorConfig
from kuberank_operator.telemetry.metrics import REGISTRY, QueueCollector, StateCollector
from kuberank_operator.telemetry.resourcestates import ResourceStateCollector, WatchedResource
from kuberank_operator.telemetry.serving import OpsServer

logger = logging.getLogger(__name__)

MANAGED_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"
# Finished pods hold no devices; the API server leaves them out of the pod watch.
LIVE_PODS_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"


@dataclass
class Runtime:
    """What the startup handler builds; kopf hands it to every handler through `memo`."""

    config: OperatorConfig
    ready: threading.Event
    api: KubeApi | None = None
    actuator: Actuator | None = None
    controller: Controller | None = None
    server: OpsServer | None = None
    collectors: tuple[Any, ...] = ()
    responders: Any = None  # responders.Responders: builtin evaluator, alert webhook
    world: World | None = None
    elector: Elector | None = None
    tuning: TuningWatch | None = None


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    # We post our own Events (one per action); kopf's per-handler events would double them.
    settings.posting.enabled = False
    for resource in ("apps/deployments", "services", "policy/poddisruptionbudgets"):
        settings.watching.label_selectors[resource] = MANAGED_SELECTOR
    settings.watching.field_selectors["pods"] = LIVE_PODS_SELECTOR
    # Restart a silent watch well before the API server's own timeout.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


def state_counts(world: World) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for key in world.rrd_keys():
        view = world.rrd(key)
        if view is not None:
            counts[str(view.status.get("state") or "Unknown")] += 1
    return dict(counts)


def resource_states(world: World) -> list[WatchedResource]:
    states = []
    for key in world.rrd_keys():
        view = world.rrd(key)
        if view is not None:
            states.append(WatchedResource(view, world.children(key).get("Deployment")))
    return states


async def start(
    *, runtime: Runtime, settings: kopf.OperatorSettings, indices: Mapping[str, Any]
) -> None:
    config = runtime.config
    configure_kopf(settings, config)
    require_indexes(indices)
    world = runtime.world = World(indices)
    runtime.api = KubeApi.from_environment(kubeconfig=config.kubeconfig, threads=config.api_threads)
    actuator = runtime.actuator = Actuator(runtime.api)
    # Tuning results change without any Kubernetes event: the watch enqueues the resource.
    runtime.tuning = TuningWatch(world=world, on_change=lambda key: controller.enqueue(key))
    api = runtime.api
    admission = AdmissionSource(
        lambda namespace, name: api.read_configmap(namespace=namespace, name=name),
        configmap_ref(config.admission_configmap),
    )
    controller = Controller(
        actuator=actuator,
        world=world,
        tuning_states=runtime.tuning.states,
        admission=admission.current,
        options=ControllerOptions(
            workers=config.workers,
            resync_seconds=config.resync_seconds,
            render=RenderOptions(
                sidecar_pod_resources=config.sidecar_pod_resources,
                sidecar_image=config.sidecar_image,
                sidecar_image_pull_policy=config.sidecar_image_pull_policy,
                accelerator=config.accelerator,
            ),
        ),
    )
    runtime.controller = controller
    queue = controller.queue
    runtime.collectors = (
        QueueCollector(lambda: (len(queue), queue.processing, queue.scheduled)),
        StateCollector(lambda: state_counts(world)),
        ResourceStateCollector(lambda: resource_states(world)),
    )
    for collector in runtime.collectors:
        REGISTRY.register(collector)
    runtime.server = OpsServer(
        host=config.metrics_host,
        port=config.metrics_port,
        registry=REGISTRY,
        healthy=lambda: controller.alive,
        unready_reason=lambda: unready_reason(runtime),
    )
    await runtime.server.start()
    logger.info(
        "kuberank operator started: watching %s, %d workers, metrics on :%d",
        "all namespaces" if config.clusterwide else ", ".join(config.namespaces),
        config.workers,
        runtime.server.bound_port,
    )
    if not config.leader_election:
        await lead(runtime)
        return
    runtime.elector = Elector(
        api=runtime.api,
        actuator=actuator,
        options=ElectionOptions(
            namespace=config.leader_election_namespace,
            name=config.leader_election_lease,
            identity=replica_identity(),
            lease_seconds=config.leader_election_seconds,
        ),
        on_lead=lambda: lead(runtime),
        on_follow=lambda: follow(runtime),
    )
    runtime.elector.start()


def unready_reason(runtime: Runtime) -> str | None:
    """/readyz: None once the watches are listed and the API server answers our calls."""
    if not runtime.ready.is_set():
        return "starting: watches not yet listed"
    return runtime.api.reachability.problem() if runtime.api is not None else None


async def lead(runtime: Runtime) -> None:
    """This replica acts: reconcile workers, then the autoscaler and webhook (issue 6)."""
    assert runtime.controller is not None
    assert runtime.api is not None
    assert runtime.actuator is not None
    assert runtime.world is not None
    runtime.controller.start()
    if runtime.tuning is not None:
        await runtime.tuning.start()
    config = runtime.config
    runtime.responders = await start_responders(
        config=ResponderOptions(
            builtin_evaluator=config.builtin_evaluator,
            alert_webhook=config.alert_webhook,
            alert_webhook_host=config.alert_webhook_host,
            alert_webhook_port=config.alert_webhook_port,
            alert_webhook_token_secret=config.alert_webhook_token_secret,
            alert_webhook_token_key=config.alert_webhook_token_key,
            runbook_base_url=config.runbook_base_url,
            alert_webhook_namespaces=config.alert_webhook_namespaces,
            watch_namespaces=config.namespaces,
        ),
        api=runtime.api,
        actuator=runtime.actuator,
        world=runtime.world,
    )


async def follow(runtime: Runtime) -> None:
    """This replica stands by: nothing acts, the watches and indexes stay warm."""
    if runtime.responders is not None:
        await stop_responders(runtime.responders)
        runtime.responders = None
    if runtime.tuning is not None:
        await runtime.tuning.stop()
    if runtime.controller is not None:
        await runtime.controller.pause()


async def stop(*, runtime: Runtime) -> None:
    if runtime.elector is not None:
        await runtime.elector.stop()
    await follow(runtime)
    if runtime.controller is not None:
        await runtime.controller.stop()
    if runtime.server is not None:
        await runtime.server.stop()
    for collector in runtime.collectors:
        REGISTRY.unregister(collector)
    runtime.collectors = ()
    if runtime.api is not None:
        runtime.api.close()


def replica_identity() -> str:
    """Unique per process: a restarted pod must not mistake its predecessor's Lease for its own."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def run(config: OperatorConfig, *, registry: kopf.OperatorRegistry) -> None:
    """Run the operator until SIGINT/SIGTERM (kopf handles the signals)."""
    kopf.configure(
        debug=config.log_level == "debug",
        quiet=config.log_level in ("warning", "error"),
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
    )
    if config.log_level != "debug":
        # kopf logs every successful watch-event handler at INFO: one line per pod change.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    ready = threading.Event()
    runtime = Runtime(config=config, ready=ready)
    asyncio.run(
        kopf.operator(
            registry=registry,
            memo=kopf.Memo(runtime=runtime),
            clusterwide=config.clusterwide,
            namespaces=list(config.namespaces),
            standalone=True,
            ready_flag=ready,
        )
    )
