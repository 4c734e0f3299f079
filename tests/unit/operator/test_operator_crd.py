"""The CRD file: structural, documented, defaulted, and in step with the operator's parser."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberank_operator.model import naming
from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.model.specs import ModelSource, ModelSpec, RerankerSpec
from tests.unit.operator.conftest import (
    EXAMPLES_DIR,
    apply_defaults,
    crd_schema,
    defaulted_spec,
    load_crd,
    minimal_spec,
)

# Fields a user must give (no sensible default exists): the model's name and its weights.
REQUIRED_WITHOUT_DEFAULT = {
    "spec.model",
    "spec.model.id",
    "spec.model.source",
    "spec.model.source.pvc",
    "spec.model.source.pvc.claimName",
    "spec.model.source.hostPath",
    "spec.model.source.hostPath.path",
    "spec.model.source.image",
    "spec.model.source.image.reference",
}
# Free-form or list-item fields that take their meaning from the Pod API.
# Tolerations, and affinity (the core/v1 Affinity type, generated): fields without defaults,
# as in a Pod spec.
NO_DEFAULT_NEEDED_UNDER = ("spec.tolerations.", "spec.affinity.")


def walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, prop in (schema.get("properties") or {}).items():
        here = f"{path}.{name}" if path else name
        yield here, prop
        yield from walk(prop, here)
        if "items" in prop:
            yield from walk(prop["items"], f"{here}.")


def test_names_scope_and_short_name() -> None:
    crd = load_crd()
    assert crd["metadata"]["name"] == f"{naming.PLURAL}.{naming.GROUP}"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == naming.KIND
    assert crd["spec"]["names"]["shortNames"] == ["rrd"]
    [version] = crd["spec"]["versions"]
    assert version["name"] == naming.VERSION
    assert version["served"]
    assert version["storage"]


def test_every_field_is_described() -> None:
    missing = [
        path
        for path, prop in walk(crd_schema(), "")
        if not prop.get("description") and not path.endswith(".") and path != "metadata"
    ]
    assert missing == []


def test_every_spec_field_has_a_default_unless_required() -> None:
    missing = [
        path
        for path, prop in walk(crd_schema()["properties"]["spec"], "spec")
        if "default" not in prop
        and path not in REQUIRED_WITHOUT_DEFAULT
        and not path.startswith(NO_DEFAULT_NEEDED_UNDER)
    ]
    assert missing == []


def test_scale_subresource_points_at_replicas_and_selector() -> None:
    [version] = load_crd()["spec"]["versions"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    status = crd_schema()["properties"]["status"]["properties"]
    for field in ("observedGeneration", "replicas", "readyReplicas", "selector", "conditions"):
        assert field in status
    for field in ("lastScale", "oom"):
        assert field in status, "issue 6 writes these; the schema must keep them"


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in json_path.strip(".").split("."):
        if part.startswith("conditions["):
            part = "conditions"
        if node is None:
            return None
        node = (node.get("properties") or {}).get(part)
        if node is not None and part == "conditions":
            node = node["items"]
    return node


def test_printer_columns_point_at_real_fields() -> None:
    [version] = load_crd()["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    names = [c["name"] for c in columns if not c.get("priority")]
    assert names == ["Model", "Accelerator", "Ready", "Status", "Age"]
    schema = crd_schema()
    for column in columns:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        assert _resolve(schema, column["jsonPath"]) is not None, column


def test_cel_rules_carry_a_message() -> None:
    def rules(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from schema.get("x-kubernetes-validations") or []
        for prop in (schema.get("properties") or {}).values():
            yield from rules(prop)

    found = list(rules(crd_schema()))
    assert len(found) >= 12
    for rule in found:
        text = str(rule.get("message") or rule.get("messageExpression") or "")
        assert text, rule["rule"]
        assert "spec." in text or "metadata.name" in text, f"message must name the field: {text}"


def test_parser_defaults_equal_crd_defaults() -> None:
    """A spec with only the required fields parses the same with and without CRD defaulting."""
    spec = minimal_spec()
    assert parse_spec(defaulted_spec(spec)) == parse_spec(spec)


@pytest.mark.parametrize("example", sorted(EXAMPLES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse(example: Path) -> None:
    body = yaml.safe_load(example.read_text())
    assert body["apiVersion"] == naming.API_VERSION
    assert body["kind"] == naming.KIND
    spec = parse_spec(defaulted_spec(body["spec"]))
    assert spec.model.id


def test_examples_cover_gpu_mig_and_embedding() -> None:
    specs = [
        parse_spec(defaulted_spec(yaml.safe_load(p.read_text())["spec"]))
        for p in sorted(EXAMPLES_DIR.glob("*.yaml"))
    ]
    assert any(s.gpu.resource_name == "nvidia.com/gpu" and s.model.task == "rerank" for s in specs)
    assert any(s.gpu.is_mig and not s.gpu.tuning_requested for s in specs)
    assert any(s.model.task == "embed" for s in specs)


def test_defaults_of_objects_with_rules_are_complete() -> None:
    """The API server checks CEL rules against a default as written, before nested defaulting:
    an object default that omits a field its rules read is refused when the CRD is applied."""

    def objects(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, prop in (schema.get("properties") or {}).items():
            here = f"{path}.{name}"
            if prop.get("type") == "object":
                yield here, prop
                yield from objects(prop, here)

    checked = 0
    for path, prop in objects(crd_schema()["properties"]["spec"], "spec"):
        if "default" not in prop or not (
            prop.get("x-kubernetes-validations")
            or any(
                p.get("x-kubernetes-validations") for p in (prop.get("properties") or {}).values()
            )
        ):
            continue
        checked += 1
        assert apply_defaults(prop, prop["default"]) == prop["default"], path
    assert checked >= 4


def test_off_is_a_string_in_yaml() -> None:
    mode = crd_schema()["properties"]["spec"]["properties"]["autoscaling"]["properties"]["mode"]
    assert mode["enum"] == ["builtin", "external", "off"]
    assert mode["default"] == "off"


def _python_name(crd_name: str) -> str:
    """spec field name -> dataclass field name: maxLength -> max_length, memoryMHz -> memory_mhz."""
    name = crd_name.replace("MHz", "Mhz")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def test_every_crd_default_is_the_spec_models_default() -> None:
    """The CRD's `default:`s and the dataclass defaults in model/specs.py (the one home of each
    default, which the parser and the alert rules read) are the same values."""
    source = ModelSource(kind="pvc", location="")
    defaults = RerankerSpec(model=ModelSpec(id="", source=source))
    compared, different = 0, []
    for path, prop in walk(crd_schema()["properties"]["spec"], "spec"):
        if "default" not in prop or path.startswith(NO_DEFAULT_NEEDED_UNDER):
            continue
        parts = path.split(".")[1:]
        if parts[:2] == ["model", "source"]:
            # Each source kind's fields live on the one ModelSource.
            parts = ["model", "source", *parts[3:]]
        here: Any = defaults
        for part in parts[:-1]:
            here = getattr(here, _python_name(part))
        if not dataclasses.is_dataclass(here):
            continue  # structure inside a free-form map (resources.requests): Pod API's
        python = _plain(getattr(here, _python_name(parts[-1])))
        crd_default = prop["default"]
        if isinstance(python, dict) and isinstance(crd_default, dict) and crd_default:
            # An object default names some fields; each must be the model's default.
            crd_default = _snake_keys(crd_default)
            python = {k: _snake_keys(python.get(k)) for k in crd_default}
        elif isinstance(python, dict) and crd_default == {}:
            # `default: {}` on a section: its fields' own defaults fill it.
            compared += 1
            continue
        compared += 1
        if python != crd_default:
            different.append((path, crd_default, python))
    assert compared > 50
    assert different == []


def _snake_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_python_name(k): _snake_keys(v) for k, v in value.items()}
    return value
