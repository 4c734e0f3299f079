"""The rendered rules, the committed rules file, PrometheusRule/PodMonitor, runbooks, promtool."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberank_operator.model import naming
from kuberank_operator.model.policies import oom_policy, scale_policy
from kuberank_operator.model.specs import AutoscalingSpec, OomSpec, ScaleUpSpec
from kuberank_operator.rendering.alertrules import (
    ACTION_LABEL,
    ALERT_NAMES,
    DEFAULT_THRESHOLDS,
    AlertThresholds,
    render_prometheus_rule,
    render_rule_groups,
    render_rules_file,
    runbook_slug,
    thresholds_from_policies,
)
from kuberank_operator.rendering.monitoring import http_sd_groups, render_pod_monitor

ROOT = Path(__file__).resolve().parents[3]
RULES_FILE = ROOT / "deploy" / "prometheus" / "kuberank-rules.yaml"
PROMTOOL_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "kuberank-rules.test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
OWNER: dict[str, Any] = {
    "apiVersion": "kuberank.dev/v1alpha1",
    "kind": "RerankerDeployment",
    "metadata": {"name": "bge", "namespace": "search", "uid": "1234"},
}
FAST = AlertThresholds(
    queue_depth=4,
    p99_latency_ms=50,
    gpu_utilization=80,
    up_for_s=5,
    down_gpu_utilization=20,
    down_for_s=90,
    oom_max_events=2,
    oom_window_s=60,
    stuck_s=30,
    rate_window_s=8,
)


def test_committed_rules_file_is_the_rendered_one() -> None:
    assert RULES_FILE.read_text() == render_rules_file(), (
        "deploy/prometheus/kuberank-rules.yaml is stale: run "
        "`.venv/bin/python -m kuberank_operator.rendering.alertrules"
        " > deploy/prometheus/kuberank-rules.yaml`"
        " and `hack/sync-chart-files.sh`"
    )


def test_every_alert_has_an_action_a_severity_and_a_runbook_page() -> None:
    groups = render_rule_groups(thresholds=DEFAULT_THRESHOLDS)
    rules = groups[0]["rules"]
    assert [r["alert"] for r in rules] == list(ALERT_NAMES)
    for rule in rules:
        assert rule["labels"][ACTION_LABEL] in ("scale-up", "scale-down", "restart-pod")
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        url = rule["annotations"]["runbook_url"]
        page = RUNBOOKS / f"{runbook_slug(rule['alert'])}.md"
        assert url.endswith(f"/docs/runbooks/{page.name}")
        text = page.read_text()
        assert text.startswith(f"# {rule['alert']}\n")
        for section in (
            "## What it means",
            "## How to confirm",
            "## What the operator does on its own",
            "## What a person should do",
        ):
            assert section in text, f"{page.name} lacks {section!r}"


def test_runbook_base_url_is_configurable() -> None:
    groups = render_rule_groups(thresholds=DEFAULT_THRESHOLDS, runbook_base_url="https://x/rb/")
    assert groups[0]["rules"][0]["annotations"]["runbook_url"] == (
        "https://x/rb/kuberank-queue-backlog.md"
    )


def test_prometheus_rule_uses_the_crs_thresholds_and_only_its_series() -> None:
    rule = render_prometheus_rule(owner=OWNER, thresholds=FAST, labels={"release": "kps"})
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["labels"] == {"release": "kps"}
    assert rule["metadata"]["ownerReferences"][0]["uid"] == "1234"
    rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    backlog = rules["KuberankQueueBacklog"]
    assert backlog["expr"] == (
        "avg by (namespace, rerankerdeployment) "
        '(kuberank_inference_queue_depth{namespace="search",rerankerdeployment="bge"}) > 4'
    )
    assert backlog["for"] == "5s"
    assert "[8s]" in rules["KuberankLatencyHigh"]["expr"]
    assert "increase(kuberank_cuda_oom_total" in rules["KuberankCudaOomRepeated"]["expr"]
    assert "[1m])) >= 2" in rules["KuberankCudaOomRepeated"]["expr"]
    assert rules["KuberankGpuIdle"]["for"] == "90s"
    assert "for" not in rules["KuberankCudaOomRepeated"]


def test_pod_monitor_scrapes_both_ports_and_adds_the_cr_label() -> None:
    monitor = render_pod_monitor(
        owner=OWNER,
        pod_selector=naming.selector_labels("bge"),
        cr_pod_label=naming.LABEL_OWNER,
        labels={"release": "kps"},
        interval_s=15,
    )
    spec = monitor["spec"]
    assert spec["selector"] == {"matchLabels": {naming.LABEL_OWNER: "bge"}}
    assert [e["port"] for e in spec["podMetricsEndpoints"]] == ["http", "gpu-metrics"]
    relabel = spec["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel == {
        "sourceLabels": ["__meta_kubernetes_pod_label_kuberank_dev_rerankerdeployment"],
        "targetLabel": "rerankerdeployment",
        "action": "replace",
    }
    assert spec["podMetricsEndpoints"][0]["interval"] == "15s"


def test_http_sd_groups_label_targets_as_the_rules_group() -> None:
    groups = http_sd_groups(
        {("search", "bge"): [("bge-b", "127.1.0.3"), ("bge-a", "127.1.0.2")], ("x", "y"): []},
        ports=(8080, 9400),
    )
    assert groups == [
        {
            "targets": ["127.1.0.2:8080", "127.1.0.2:9400"],
            "labels": {"namespace": "search", "rerankerdeployment": "bge", "pod": "bge-a"},
        },
        {
            "targets": ["127.1.0.3:8080", "127.1.0.3:9400"],
            "labels": {"namespace": "search", "rerankerdeployment": "bge", "pod": "bge-b"},
        },
    ]
    assert http_sd_groups({("a", "b"): [("p", "::1")]}, ports=(1,))[0]["targets"] == ["[::1]:1"]


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed: run `make system-deps`")
    return path


@pytest.mark.prometheus
def test_promtool_unit_tests_of_the_rules_file_pass() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", str(PROMTOOL_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_accepts_a_rendered_prometheus_rule(tmp_path: Path) -> None:
    rule = render_prometheus_rule(owner=OWNER, thresholds=FAST, labels={})
    assert "SUCCESS: 6 rules found" in _check_rules(rule, tmp_path)


def _check_rules(rule: dict[str, Any], tmp_path: Path) -> str:
    """promtool's report on a PrometheusRule's groups; fails the test when it refuses them."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [_promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_queue_tokens_rule_is_rendered_only_where_the_threshold_is_set(
    tmp_path: Path,
) -> None:
    assert "KuberankQueueTokensBacklog" not in ALERT_NAMES
    tokens = dataclasses.replace(FAST, queue_tokens=32768)
    rule = render_prometheus_rule(owner=OWNER, thresholds=tokens, labels={})
    rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    backlog = rules["KuberankQueueTokensBacklog"]
    assert backlog["expr"] == (
        "avg by (namespace, rerankerdeployment) "
        '(kuberank_inference_queue_tokens{namespace="search",rerankerdeployment="bge"}) > 32768'
    )
    assert backlog["for"] == "5s"
    assert backlog["labels"][ACTION_LABEL] == "scale-up"
    page = RUNBOOKS / f"{runbook_slug('KuberankQueueTokensBacklog')}.md"
    assert page.read_text().startswith("# KuberankQueueTokensBacklog\n")
    assert backlog["annotations"]["runbook_url"].endswith(f"/docs/runbooks/{page.name}")
    assert "SUCCESS: 7 rules found" in _check_rules(rule, tmp_path)


def test_the_queue_tokens_threshold_comes_from_the_spec() -> None:
    spec = AutoscalingSpec(scale_up=ScaleUpSpec(queue_tokens=4096))
    thresholds = thresholds_from_policies(
        scale=scale_policy(spec), oom=oom_policy(OomSpec()), interval_s=15
    )
    assert thresholds.queue_tokens == 4096
    assert DEFAULT_THRESHOLDS.queue_tokens == 0
