"""The model in a child process gives the same scores as in-process, and maps OOM the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kuberank_inference.engine.contracts import PairsInput
from kuberank_inference.failures import DeviceOutOfMemoryError
from kuberank_inference.faults import OomInjection
from kuberank_inference.sources import ModelSource
from kuberank_inference.torchmodel.process import ModelProcess
from kuberank_inference.torchmodel.settings import RunnerSettings


def _settings(path: Path) -> RunnerSettings:
    return RunnerSettings(
        source=ModelSource(path, "tiny-ce"),
        task="auto",
        device="cpu",
        dtype="auto",
        attention="auto",
        max_input_length=0,
        model_id="tiny-ce",
        vram_safety_margin=0.1,
        fused_gelu=False,
        fused_norm=False,
    )


def test_child_process_scores_equal_in_process(
    bert_cross_encoder_dir: Path, cross_runner: Any
) -> None:
    settings = _settings(bert_cross_encoder_dir)
    child = OomInjection(ModelProcess(settings))
    try:
        assert child.info == cross_runner.info
        request = PairsInput("query", ["one doc", "two docs here", "three"], truncate=False)
        sequences = child.encode(request)
        first = child.start_batch(sequences)
        second = child.start_batch(sequences[:1])  # two in flight
        expected = cross_runner.finish_batch(cross_runner.start_batch(cross_runner.encode(request)))
        assert child.finish_batch(first) == pytest.approx(expected, abs=1e-6)
        assert child.finish_batch(second) == pytest.approx(expected[:1], abs=1e-6)
        child.inject_oom(1)
        with pytest.raises(DeviceOutOfMemoryError, match="injected"):
            child.finish_batch(child.start_batch(sequences))
        assert len(child.finish_batch(child.start_batch(sequences))) == 3
        assert child.device_memory() is None
    finally:
        child.close()


def test_start_up_steps_run_in_the_child(bert_cross_encoder_dir: Path) -> None:
    settings = _settings(bert_cross_encoder_dir)
    child = ModelProcess(settings)
    try:
        child.warm_up(max_batch_tokens=1024)  # on the parent's request, as the fitting asks
        assert child.activation_bytes_per_token(tokens=512) == 0.0  # CPU: nothing to plan
        assert child.free_device_bytes() is None
        request = PairsInput("query", ["one doc"], truncate=False)
        assert len(child.finish_batch(child.start_batch(child.encode(request)))) == 1
    finally:
        child.close()
