"""docs/inference.md documents every flag, environment variable and metric the server has."""

from __future__ import annotations

from pathlib import Path

from kuberank_inference.config import FLAGS
from kuberank_inference.metrics import InferenceMetrics

DOC = Path(__file__).resolve().parents[3] / "docs" / "inference.md"


def test_every_flag_and_variable_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [f.name for f in FLAGS if f"`--{f.name}`" not in text or f"`{f.env}`" not in text]
    assert not missing, f"add these flags to {DOC}: {missing}"


def test_every_metric_is_documented_with_help_text() -> None:
    text = DOC.read_text(encoding="utf-8")
    metrics = InferenceMetrics()
    metrics.watch_device_memory(lambda: None)
    families = list(metrics.registry.collect())
    assert len(families) >= 16
    for family in families:
        exported = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{exported}`" in text, f"add {exported} to {DOC}"
        assert len(family.documentation) > 20, family.name
