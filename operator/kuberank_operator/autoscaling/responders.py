"""Start and stop what responds to alert thresholds: the builtin evaluator (with the monitoring
objects it keeps) and, when enabled, the Alertmanager webhook receiver (which also serves
Prometheus HTTP service discovery of the pods)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kuberank_operator.autoscaling.alertguards import AlertScope
from kuberank_operator.autoscaling.alertwebhook import TokenSource, build_app, start_server
from kuberank_operator.autoscaling.loop import Autoscaler, AutoscalerOptions
from kuberank_operator.autoscaling.monitoring import MonitoringSync
from kuberank_operator.cluster.actuator import Actuator
from kuberank_operator.cluster.kubeapi import KubeApi
from kuberank_operator.model import naming
from kuberank_operator.model.indexes import World
from kuberank_operator.model.observations import scraped_pods
from kuberank_operator.model.signals import INFERENCE_METRICS_PORT, SIDECAR_METRICS_PORT
from kuberank_operator.rendering.monitoring import http_sd_groups

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResponderOptions:
    """The operator-wide settings the responders read (from the command line)."""

    builtin_evaluator: bool
    alert_webhook: bool
    alert_webhook_host: str
    alert_webhook_port: int
    alert_webhook_token_secret: str
    alert_webhook_token_key: str
    runbook_base_url: str
    # --alert-webhook-namespaces and --namespaces (empty: all).
    alert_webhook_namespaces: tuple[str, ...] = ()
    watch_namespaces: tuple[str, ...] = ()


@dataclass
class Responders:
    autoscaler: Autoscaler
    webhook: web.AppRunner | None = None
    webhook_port: int = 0


def secret_ref(value: str) -> tuple[str, str]:
    """NAMESPACE/NAME of the token Secret, as --alert-webhook-token-secret gives it."""
    return naming.namespaced_ref(
        value,
        flag="--alert-webhook-token-secret",
        hint="a Secret with the bearer token under --alert-webhook-token-key",
    )


async def start_responders(
    *, config: ResponderOptions, api: KubeApi, actuator: Actuator, world: World
) -> Responders:
    scope = AlertScope.resolve(
        allowed=config.alert_webhook_namespaces, watched=config.watch_namespaces
    )
    autoscaler = Autoscaler(
        actuator=actuator,
        world=world,
        options=AutoscalerOptions(builtin=config.builtin_evaluator, alert_scope=scope),
        monitoring=MonitoringSync(
            api=api, actuator=actuator, runbook_base_url=config.runbook_base_url
        ),
    )
    await autoscaler.start()
    responders = Responders(autoscaler=autoscaler)
    if config.alert_webhook:
        namespace, name = secret_ref(config.alert_webhook_token_secret)
        key = config.alert_webhook_token_key

        async def read_token() -> str | None:
            return await api.read_secret_key(namespace=namespace, name=name, key=key)

        def targets() -> list[dict[str, Any]]:
            pods = {
                key: [(p.name, p.ip) for p in scraped_pods(world.pods(key))]
                for key in world.rrd_keys()
            }
            return http_sd_groups(pods, ports=(INFERENCE_METRICS_PORT, SIDECAR_METRICS_PORT))

        app = build_app(actions=autoscaler, token_source=TokenSource(read_token), targets=targets)
        runner, port = await start_server(
            app, host=config.alert_webhook_host, port=config.alert_webhook_port
        )
        responders.webhook, responders.webhook_port = runner, port
        logger.info(
            "Alertmanager webhook receiver on %s:%d/alerts (token from secret %s/%s key %s), "
            "acting in %s",
            config.alert_webhook_host,
            port,
            namespace,
            name,
            key,
            scope,
        )
        within = scope.namespaces if scope.namespaces is not None else frozenset()
        unwatched = set(config.alert_webhook_namespaces) - within - {"*"}
        if unwatched:
            logger.warning(
                "--alert-webhook-namespaces names %s, which --namespaces does not watch: "
                "alerts there are refused",
                ", ".join(sorted(unwatched)),
            )
    logger.info(
        "builtin evaluator %s",
        "on" if config.builtin_evaluator else "off: only Alertmanager webhooks act",
    )
    return responders


async def stop_responders(responders: Responders) -> None:
    if responders.webhook is not None:
        await responders.webhook.cleanup()
        responders.webhook = None
    await responders.autoscaler.stop()
