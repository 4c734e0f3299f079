"""values.schema.json turns bad values into errors that name the field; good values pass."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from docgen import chart_values
from tests.unit.chart.conftest import CHART_DIR

Helm = Callable[..., subprocess.CompletedProcess[str]]

# (--set pair, text the error must contain: the field's path and what is wrong)
BAD_VALUES = [
    ("operator.replicaCount=-1", "operator/replicaCount"),
    ("operator.replicaCount=many", "operator/replicaCount"),
    ("operator.logLevel=verbose", "operator/logLevel"),
    ("operator.logFormat=xml", "operator/logFormat"),
    ("operator.port=70000", "operator/port"),
    ("operator.watchNamespaces={Search_Team}", "operator/watchNamespaces/0"),
    ("operator.extraArgs={verbose}", "operator/extraArgs/0"),
    ("image.pullPolicy=Sometimes", "image/pullPolicy"),
    ("image.digest=sha256:1234", "image/digest"),
    ("alertWebhook.port=0", "alertWebhook/port"),
    ("alertWebhook.namespaces={search,Team_B}", "alertWebhook/namespaces/1"),
    ("alertWebhook.namespaces={**}", "alertWebhook/namespaces/0"),
    ("monitoring.podMonitor.interval=30", "monitoring/podMonitor/interval"),
    ("monitoring.prometheusRule.runbookBaseUrl=docs/runbooks", "runbookBaseUrl"),
    ("operator.replicas=2", "replicas"),  # a typo of replicaCount: unknown keys are refused
    ("rbac.enabled=false", "enabled"),
]


@pytest.mark.parametrize(("pair", "field"), BAD_VALUES, ids=[p for p, _ in BAD_VALUES])
def test_bad_value_is_rejected_naming_the_field(helm: Helm, pair: str, field: str) -> None:
    done = helm("template", "kuberank", str(CHART_DIR), "--set", pair)
    assert done.returncode != 0, f"--set {pair} was accepted"
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
    assert field in done.stderr, done.stderr


def test_schema_allows_every_documented_value(helm: Helm) -> None:
    # The defaults themselves validate, and so does a value set explicitly to each default.
    done = helm("lint", "--strict", str(CHART_DIR), "--set", "operator.logLevel=debug")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_value_is_documented() -> None:
    problems = chart_values.coverage_problems(values_text=(CHART_DIR / "values.yaml").read_text())
    assert problems == []


def test_coverage_check_catches_an_undocumented_value() -> None:
    text = "## @param a.b documented\na:\n  b: 1\n  c: 2\n## @param ghost not a value\n"
    problems = chart_values.coverage_problems(values_text=text)
    assert problems == [
        "`## @param ghost` names no value in values.yaml",
        "value a.c has no `## @param a.c <description>` in values.yaml",
    ]


def test_webhook_with_several_replicas_is_refused_with_the_fix(helm: Helm) -> None:
    done = helm(
        "template", "kuberank", str(CHART_DIR),
        "--set", "operator.replicaCount=2", "--set", "alertWebhook.enabled=true",
    )  # fmt: skip
    assert done.returncode != 0
    assert "alertWebhook.enabled=true needs operator.replicaCount=1 (got 2)" in done.stderr
    assert "set operator.replicaCount=1 or alertWebhook.enabled=false" in done.stderr
