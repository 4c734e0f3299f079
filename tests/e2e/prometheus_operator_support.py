"""The e2e suites' kube-prometheus-stack: prometheus-operator with the real Prometheus and
Alertmanager it manages (localcluster.monitoringstack), and the objects a kube-prometheus-stack
user writes to route kuberank's alerts to the operator's webhook."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from localcluster import LocalCluster
from localcluster.monitoringstack import MONITORING_API, MonitoringStack
from tests.e2e.monitoring import PROMETHEUS_DOC

# A kube-prometheus-stack release: its Prometheus selects PodMonitors and PrometheusRules by
# `release: <release name>` (the chart's *SelectorNilUsesHelmValues defaults).
RELEASE = "kube-prometheus-stack"
STACK_NAMESPACE = "monitoring"


@pytest.fixture(scope="module")
def monitoring_stack(
    local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MonitoringStack]:
    stack = MonitoringStack(
        local_cluster,
        workdir=tmp_path_factory.mktemp("monitoring-stack"),
        namespace=STACK_NAMESPACE,
        release=RELEASE,
    )
    try:
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def webhook_alertmanager_config(
    *, namespace: str, webhook_url: str, token_secret: str, group_interval: str = "1s"
) -> dict[str, Any]:
    """The AlertmanagerConfig docs/operator/prometheus.md shows (routing kuberank's alerts to the
    operator's webhook with the bearer token from a Secret), for NAMESPACE, the test's webhook
    URL and token Secret, grouping alerts quickly."""
    text = PROMETHEUS_DOC.read_text()
    for block in text.split("```yaml\n")[1:]:
        body = block.split("```", 1)[0]
        if "kind: AlertmanagerConfig" in body:
            config: dict[str, Any] = yaml.safe_load(body)
            break
    else:
        raise RuntimeError(f"{PROMETHEUS_DOC} has no ```yaml block with an AlertmanagerConfig")
    assert config["metadata"]["labels"] == {"release": RELEASE}, "the doc's release label"
    config["metadata"]["namespace"] = namespace
    config["spec"]["route"]["groupInterval"] = group_interval
    (receiver,) = config["spec"]["receivers"]
    (webhook,) = receiver["webhookConfigs"]
    webhook["url"] = webhook_url
    webhook["httpConfig"]["authorization"]["credentials"]["name"] = token_secret
    return config


__all__ = ["MONITORING_API", "RELEASE", "monitoring_stack", "webhook_alertmanager_config"]
