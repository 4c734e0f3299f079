"""docs/configuration.md, rendered from the CRD's OpenAPI schema: every field, its type, default,
limits and description, and every CEL rule with its message. Pure: text in, text out."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Schema = Mapping[str, Any]

HEADER = (
    "<!-- Generated from {sources} by `python -m docgen crd` (make docs). Do not edit by "
    "hand: edit the CRD's descriptions and regenerate; a test fails when this file is stale. -->"
)


@dataclass(frozen=True)
class ObjectNode:
    """An object in the schema with properties: one section of the reference."""

    path: str
    schema: Schema


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def type_name(schema: Schema) -> str:
    """A short type such as `string`, `integer (int32)`, `[]object`, `map[string]string`."""
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return "[]" + type_name(schema.get("items", {}))
    if kind == "object" and "properties" not in schema:
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            return "map[string]" + type_name(extra)
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return "object (free-form)"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return kind


def limits(schema: Schema) -> list[str]:
    """Human-readable limits: enums, ranges, lengths, patterns, item counts."""
    out: list[str] = []
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"]))
    for key, inclusive, strict in (("minimum", "≥", ">"), ("maximum", "≤", "<")):
        if key in schema:
            exclusive = schema.get("exclusiveM" + key[1:])
            out.append(f"{strict if exclusive else inclusive} {schema[key]}")
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("minProperties", "min entries"),
        ("maxProperties", "max entries"),
    ):
        if key in schema:
            out.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        out.append(f"pattern `{schema['pattern']}`")
    if schema.get("nullable"):
        out.append("nullable")
    if schema.get("x-kubernetes-list-type"):
        out.append(f"list type {schema['x-kubernetes-list-type']}")
    return out


def walk_objects(schema: Schema, path: str) -> Iterator[ObjectNode]:
    """Every object node with properties, depth first in declaration order."""
    if schema.get("type") == "array":
        yield from walk_objects(schema.get("items", {}), path + "[]")
        return
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping) and "properties" not in schema:
        yield from walk_objects(extra, path + "[*]")
        return
    if "properties" not in schema:
        return
    yield ObjectNode(path=path, schema=schema)
    for name, child in schema["properties"].items():
        yield from walk_objects(child, f"{path}.{name}")


def _anchor(path: str) -> str:
    return "".join(c for c in path.lower() if c.isalnum() or c in "-_")


def _has_section(schema: Schema) -> bool:
    return any(True for _ in walk_objects(schema, "x"))


def render_object(node: ObjectNode) -> list[str]:
    """One section: the object's description, its fields, and its CEL rules."""
    lines = [f"### `{node.path}`", ""]
    if node.schema.get("description"):
        lines += [_one_line(str(node.schema["description"])), ""]
    required = set(node.schema.get("required", []))
    lines += ["| Field | Type | Default | Limits | Description |", "|---|---|---|---|---|"]
    for name, child in node.schema["properties"].items():
        field = f"`{name}`" + (" (required)" if name in required else "")
        if _has_section(child):
            # Anchors drop [] and [*], so the child's section is found by its plain path.
            field = f"[{field}](#{_anchor(f'{node.path}.{name}')})"
        default = f"`{json.dumps(child['default'])}`" if "default" in child else ""
        lines.append(
            f"| {field} | {type_name(child)} | {default} | {'; '.join(limits(child))} | "
            f"{_one_line(str(child.get('description', '')))} |"
        )
    lines.append("")
    for rule in node.schema.get("x-kubernetes-validations", []):
        lines.append(_rule_line(rule, on=None))
    for name, child in node.schema["properties"].items():
        if not _has_section(child):
            rules = child.get("x-kubernetes-validations", [])
            lines += [_rule_line(rule, on=name) for rule in rules]
    if lines[-1] != "":
        lines.append("")
    return lines


def _rule_line(rule: Mapping[str, Any], *, on: str | None) -> str:
    where = f" on `{on}`" if on else ""
    if "messageExpression" in rule:
        said = f"the message computed by `{_one_line(str(rule['messageExpression']))}`"
    else:
        said = f"*{_one_line(str(rule.get('message', rule['rule'])))}*"
    return f"- Rule{where}: `{rule['rule']}` — rejected with {said}"


def render_version(*, kind: str, group: str, version: Mapping[str, Any]) -> list[str]:
    """The sections of one served version: spec first, then status."""
    schema = version["schema"]["openAPIV3Schema"]
    lines = [f"## {kind} `{group}/{version['name']}`", ""]
    if schema.get("description"):
        lines += [_one_line(str(schema["description"])), ""]
    rules = [_rule_line(rule, on=None) for rule in schema.get("x-kubernetes-validations", [])]
    lines += [*rules, ""] if rules else []
    for top in ("spec", "status"):
        if top in schema.get("properties", {}):
            for node in walk_objects(schema["properties"][top], top):
                lines += render_object(node)
    return lines


def render_crd(*, crd: Mapping[str, Any], source: str) -> str:
    """The whole reference for one CRD: summary, printer columns, then every served version."""
    spec = crd["spec"]
    names = spec["names"]
    kind, group = names["kind"], spec["group"]
    lines = [HEADER.format(sources=f"`{source}`"), "", f"# {kind} configuration reference", ""]
    short = ", ".join(f"`{n}`" for n in names.get("shortNames", []))
    lines += [
        f"- API group: `{group}`, scope: {spec['scope']}, plural `{names['plural']}`"
        + (f", short names {short}" if short else ""),
    ]
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = ", ".join(sorted(version.get("subresources", {}))) or "none"
        storage = " (storage version)" if version.get("storage") else ""
        lines.append(f"- Version `{version['name']}`{storage}; subresources: {subresources}")
        scale = version.get("subresources", {}).get("scale")
        if scale:
            selector = scale.get("labelSelectorPath")
            lines.append(
                f"- Scale subresource: replicas at `{scale['specReplicasPath']}`, observed at "
                f"`{scale['statusReplicasPath']}`"
                + (f", selector at `{selector}`" if selector else "")
                + " (`kubectl scale`, HPA and KEDA work on it)"
            )
    lines.append("")
    for version in spec["versions"]:
        columns = version.get("additionalPrinterColumns", [])
        if version.get("served", True) and columns:
            lines += [
                f"`kubectl get {names.get('shortNames', [names['plural']])[0]}` columns "
                f"({version['name']}; priority 1 columns need `-o wide`):",
                "",
                "| Column | JSONPath | Priority | Description |",
                "|---|---|---|---|",
            ]
            for column in columns:
                lines.append(
                    f"| {column['name']} | `{column['jsonPath']}` | {column.get('priority', 0)} | "
                    f"{_one_line(str(column.get('description', '')))} |"
                )
            lines.append("")
    for version in spec["versions"]:
        if version.get("served", True):
            lines += render_version(kind=kind, group=group, version=version)
    return "\n".join(lines).rstrip("\n") + "\n"
