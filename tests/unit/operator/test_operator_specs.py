"""Parsing a spec into typed values; errors name the field."""

from __future__ import annotations

from typing import Any

import pytest

from kuberank_operator.model.parsing import parse_spec
from kuberank_operator.model.specs import ImageSpec, SpecError
from tests.unit.operator.conftest import minimal_spec


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec(minimal_spec())
    assert spec.replicas == 1
    assert spec.gpu.resource_name == "nvidia.com/gpu"
    assert spec.gpu.vram_safety_margin == pytest.approx(0.1)
    assert spec.autoscaling.mode == "off"
    assert spec.rollout.max_surge == 0
    assert spec.model.source.kind == "pvc"
    assert spec.model.source.location == "models"
    assert not spec.gpu.tuning_requested


def test_mig_and_tuning_flags() -> None:
    spec = parse_spec(minimal_spec(gpu={"resourceName": "nvidia.com/mig-1g.10gb"}))
    assert spec.gpu.is_mig
    tuned = parse_spec(minimal_spec(gpu={"lockedClocks": {"memoryMHz": 2600}}))
    assert tuned.gpu.tuning_requested
    assert not tuned.gpu.is_mig


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"replicas": "two"}, "spec.replicas"),
        ({"gpu": {"powerLimitWatts": 1.5}}, "spec.gpu.powerLimitWatts"),
        ({"gpu": []}, "spec.gpu"),
        ({"autoscaling": {"mode": "sometimes"}}, "spec.autoscaling.mode"),
        ({"monitoring": {"podMonitor": "yes"}}, "spec.monitoring.podMonitor"),
        ({"tolerations": "all"}, "spec.tolerations"),
    ],
)
def test_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec(minimal_spec(**change))


def test_source_must_be_exactly_one() -> None:
    spec = minimal_spec()
    spec["model"]["source"]["hostPath"] = {"path": "/models"}
    with pytest.raises(SpecError, match=r"spec\.model\.source must set exactly one"):
        parse_spec(spec)


def test_model_id_is_required() -> None:
    spec = minimal_spec()
    del spec["model"]["id"]
    with pytest.raises(SpecError, match=r"spec\.model\.id is required"):
        parse_spec(spec)


def test_image_reference_uses_at_for_digests() -> None:
    assert ImageSpec(repository="r/k", tag="1.2").reference == "r/k:1.2"
    assert ImageSpec(repository="r/k", tag="sha256:abc").reference == "r/k@sha256:abc"


def test_queue_tokens_threshold_is_off_unless_set() -> None:
    assert parse_spec(minimal_spec()).autoscaling.scale_up.queue_tokens == 0
    spec = parse_spec(minimal_spec(autoscaling={"scaleUp": {"queueTokens": 65536}}))
    assert spec.autoscaling.scale_up.queue_tokens == 65536
    assert spec.autoscaling.scale_up.queue_depth == 512
