"""Every metric the Grafana dashboard and the alert rules read is exported by a component, and
docs/metrics.md lists exactly what the components export. The inference server (CPU, packaged
MiniLM) and the sidecar (fake NVML) run as real processes and are scraped; the operator's
families come from its registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from docgen import metric_names, metrics_reference, scraping, sources

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((REPO / "deploy" / "prometheus").glob("*.yaml"))
# Read by rules but exported by another program, each with why that is fine.
EXTERNAL = {
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "NVIDIA dcgm-exporter's profiling field; the rules use it "
    "only as an `or` fallback where a cluster runs dcgm-exporter beside kuberank",
}


@pytest.fixture(scope="module")
def expositions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return scraping.scrape_components(tmp_path_factory.mktemp("scrape"))


@pytest.fixture(scope="module")
def exported(expositions: dict[str, str]) -> set[str]:
    names: set[str] = set()
    for text in expositions.values():
        names |= set(metric_names.exposed_names(text))
    return names


def test_metrics_reference_lists_what_the_components_export(expositions: dict[str, str]) -> None:
    expected = metrics_reference.render(expositions)
    assert sources.METRICS_MD.read_text() == expected, "docs/metrics.md is stale: run `make docs`"


def test_every_dashboard_metric_is_exported(exported: set[str]) -> None:
    dashboard = json.loads((REPO / "dashboards" / "kuberank.json").read_text())
    read: set[str] = set()
    for expr in metric_names.dashboard_exprs(dashboard):
        read |= metric_names.names_in_expr(expr)
    assert len(read) > 20
    assert sorted(read - exported) == []


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_alert_rule_metric_is_exported(exported: set[str], path: Path) -> None:
    rules = yaml.safe_load(path.read_text())
    recorded = metric_names.recorded_names(rules)
    missing = {
        name: alert
        for alert, expr in metric_names.rule_exprs(rules)
        for name in metric_names.names_in_expr(expr)
        if name not in exported and name not in recorded and name not in EXTERNAL
    }
    assert missing == {}


def test_a_misspelled_metric_would_be_caught(exported: set[str]) -> None:
    expr = 'sum(rate(kuberank_inference_pair_total{pod=~"$pod"}[$__rate_interval]))'
    assert metric_names.names_in_expr(expr) - exported == {"kuberank_inference_pair_total"}
