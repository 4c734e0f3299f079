"""Helpers for the operator's unit tests: the CRD as the API server sees it, sample specs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CRD_PATH = REPO / "crds" / "rerankerdeployments.kuberank.dev.yaml"
EXAMPLES_DIR = REPO / "crds" / "examples"


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: absent fields with a default get it,
    then the result is defaulted again (so `default: {}` objects get their fields' defaults)."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = copy.deepcopy(value)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in out and "default" in prop:
            out[name] = copy.deepcopy(prop["default"])
        if name in out:
            out[name] = apply_defaults(prop, out[name])
    return out


def defaulted_spec(spec: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = apply_defaults(crd_schema()["properties"]["spec"], spec)
    return result


def minimal_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {
            "id": "BAAI/bge-reranker-v2-m3",
            "source": {"pvc": {"claimName": "models", "path": "bge-reranker-v2-m3"}},
        }
    }
    spec.update(extra)
    return spec


@pytest.fixture
def crd() -> dict[str, Any]:
    return load_crd()
