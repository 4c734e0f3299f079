"""The GPU alert rules: valid for Prometheus, unit-tested with promtool, each with a runbook."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "deploy/prometheus/gpu-alerts.yaml"
RULE_TESTS = REPO / "deploy/prometheus/tests/gpu-alerts.test.yaml"
RUNBOOK_PREFIX = "https://github.com/kuberank/kuberank/blob/main/"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("Debian's promtool is not installed (make system-deps)")
    return found


@pytest.mark.prometheus
def test_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = _promtool()
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    done = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_and_links_an_existing_runbook() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    for rule in rules:
        assert rule["alert"] in tested, f"{rule['alert']} has no firing case in {RULE_TESTS.name}"
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_PREFIX + "docs/runbooks/gpu-"), url
        page = REPO / url.removeprefix(RUNBOOK_PREFIX)
        assert page.exists(), f"{rule['alert']}: runbook {page} is missing"
        text = page.read_text()
        assert rule["alert"] in text
        for heading in (
            "## What it means",
            "## How to confirm",
            "## What the operator does",
            "## What a person should do",
        ):
            assert heading in text, f"{page.name} lacks {heading!r}"
