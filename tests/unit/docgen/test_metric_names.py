"""The PromQL metric-name lexer and the exposition readers behind the dashboard/rules check."""

from __future__ import annotations

import pytest

from docgen import metric_names as m


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (pod) (rate(a_total{x="y", z=~"$pod"}[5m]))', {"a_total"}),
        ("a / on (pod) group_left (node) b > bool 0.5", {"a", "b"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
        ("x offset 5m and y unless z or w", {"x", "y", "z", "w"}),
        ("1e3 < c", {"c"}),
        ('label_values(k_ready{namespace=~"$namespace", rrd=~"$rrd"}, pod)', {"k_ready"}),
        ("label_values(k_ready, namespace)", {"k_ready"}),
        ('count(m{a="by (x)"}) without (pod)', {"m"}),
    ],
)
def test_names_in_expr(expr: str, names: set[str]) -> None:
    assert m.names_in_expr(expr) == names


EXPOSITION = """\
# HELP DCGM_FI_DEV_PCIE_REPLAY_COUNTER Retries.
# TYPE DCGM_FI_DEV_PCIE_REPLAY_COUNTER counter
DCGM_FI_DEV_PCIE_REPLAY_COUNTER{gpu="0"} 3
# HELP k_requests_total Requests.
# TYPE k_requests_total counter
# HELP k_seconds Latency.
# TYPE k_seconds histogram
k_seconds_bucket{le="+Inf"} 1.0
k_seconds_count 1.0
k_seconds_sum 0.1
"""


def test_exposed_names_keep_names_as_written() -> None:
    names = m.exposed_names(EXPOSITION)
    assert "DCGM_FI_DEV_PCIE_REPLAY_COUNTER" in names
    assert "DCGM_FI_DEV_PCIE_REPLAY_COUNTER_total" not in names
    assert "k_requests_total" in names  # declared, no sample yet
    assert {"k_seconds_bucket", "k_seconds_count", "k_seconds_sum"} <= set(names)
    assert names["k_seconds_bucket"] == "histogram"


def test_merge_adds_only_missing_families() -> None:
    second = "# HELP a A.\n# TYPE a gauge\na 1\n# HELP k_seconds L.\n# TYPE k_seconds gauge\n"
    merged = m.merge_expositions(EXPOSITION, second)
    assert merged.count("# TYPE k_seconds ") == 1
    assert merged.endswith("# HELP a A.\n# TYPE a gauge\na 1\n")


def test_dashboard_and_rule_readers() -> None:
    dashboard = {
        "panels": [{"type": "row", "panels": [{"targets": [{"expr": "a"}]}]}, {"targets": []}],
        "templating": {"list": [{"type": "query", "query": {"query": "label_values(b, pod)"}}]},
    }
    assert list(m.dashboard_exprs(dashboard)) == ["a", "label_values(b, pod)"]
    rules = {"groups": [{"rules": [{"alert": "A", "expr": "x > 1"}, {"record": "r", "expr": "y"}]}]}
    assert list(m.rule_exprs(rules)) == [("A", "x > 1"), ("r", "y")]
    assert m.recorded_names(rules) == {"r"}
