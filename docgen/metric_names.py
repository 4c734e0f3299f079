"""Metric names: those a PromQL expression reads, and those an exposition (a scrape) offers.

A small lexer, not a PromQL parser: it drops strings, label matchers, durations, grouping
clauses and function names, and what is left are metric names. Good enough for dashboards and
alert rules; a name it misses can only make a test stricter, never hide a missing metric.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_VARIABLE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2", "start", "end",
}  # fmt: skip
# Grafana templating: label_values(selector, label) names a metric and then a label.
_LABEL_VALUES = re.compile(r"label_values\((?P<args>.*)\)", re.DOTALL)


def _selector_of_label_values(args: str) -> str:
    """The selector of label_values(selector, label): up to the last comma outside braces."""
    depth, cut = 0, len(args)
    for i, char in enumerate(args):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            cut = i
    return args[:cut]


def names_in_expr(expr: str) -> set[str]:
    """Metric names that a PromQL expression (or a Grafana label_values query) reads."""
    if match := _LABEL_VALUES.fullmatch(expr.strip()):
        return names_in_expr(_selector_of_label_values(match["args"]))
    text = _STRING.sub(" ", expr)
    text = _VARIABLE.sub("1", text)
    while True:
        reduced = _MATCHERS.sub(" ", text)
        if reduced == text:
            break
        text = reduced
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    found: set[str] = set()
    for match in _NAME.finditer(text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        is_call = following.startswith("(")
        preceded_by_digit = match.start() > 0 and text[match.start() - 1].isdigit()
        if is_call or preceded_by_digit or word.lower() in _KEYWORDS:
            continue
        found.add(word)
    return found


def dashboard_exprs(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """Every query of a Grafana dashboard: panel targets (rows included) and variables."""

    def panels(items: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield str(target["expr"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            yield str(query.get("query") if isinstance(query, Mapping) else query)


def rule_exprs(rule_file: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(alert or record name, expr) of every rule in a Prometheus rule file or PrometheusRule."""
    groups = rule_file.get("groups") or rule_file.get("spec", {}).get("groups", [])
    for group in groups:
        for rule in group.get("rules", []):
            yield str(rule.get("alert") or rule.get("record")), str(rule["expr"])


def recorded_names(rule_file: Mapping[str, Any]) -> set[str]:
    """Series that recording rules create (rules may read them like exported metrics)."""
    groups = rule_file.get("groups") or rule_file.get("spec", {}).get("groups", [])
    return {str(r["record"]) for g in groups for r in g.get("rules", []) if "record" in r}


def exposed_names(exposition: str) -> dict[str, str]:
    """Series name -> family type, as a query may name them: the sample lines' names exactly,
    and for families declared without samples (labelled, not yet observed) their declared name
    with the suffixes of their type."""
    types: dict[str, str] = {}
    names: dict[str, str] = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            names[name] = _family_type(name, types)
    suffixes = {
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "counter": ("_total",),
    }
    for name, kind in types.items():
        if not any(n == name or n.startswith(name + "_") for n in names):
            base = name.removesuffix("_total") if kind == "counter" else name
            for suffix in suffixes.get(kind, ("",)):
                names[base + suffix] = kind
    return names


def _family_type(sample: str, types: Mapping[str, str]) -> str:
    for suffix in ("", "_total", "_bucket", "_sum", "_count", "_created"):
        if suffix and sample.endswith(suffix) and sample.removesuffix(suffix) in types:
            return types[sample.removesuffix(suffix)]
        if not suffix and sample in types:
            return types[sample]
    return "untyped"


def merge_expositions(first: str, second: str) -> str:
    """`first`, plus the families of `second` that `first` lacks (each family is the block from
    its # HELP line to the next one). For metrics that appear only in some states."""
    have = {line.split(" ")[2] for line in first.splitlines() if line.startswith("# TYPE ")}
    extra: list[str] = []
    keep = False
    for line in second.splitlines():
        if line.startswith("# HELP "):
            keep = line.split(" ")[2] not in have
        if keep:
            extra.append(line)
    return first.rstrip("\n") + "\n" + ("\n".join(extra) + "\n" if extra else "")
