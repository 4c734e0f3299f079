"""dtype fp8 without an FP8 GPU: the runner refuses it naming the device and keeps serving in the
dtype auto would pick; the server shows the precision report in /info and its metrics; the FP8
encoder's eager (torch) kernels run the gate's calibration set on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from kuberank_inference.engine.contracts import ModelInfo
from kuberank_inference.quality import Agreement, GateThresholds, PrecisionReport
from tests.integration.inference.conftest import Serve, load_runner
from tests.unit.inference.fakes import ServableFakeRunner, fake_info


def test_fp8_on_cpu_is_refused_naming_the_device(bert_cross_encoder_dir: Path) -> None:
    runner = load_runner(bert_cross_encoder_dir, dtype="fp8")
    precision = runner.info.precision
    assert precision is not None
    assert precision.state == "refused_device"
    assert precision.requested == "fp8"
    assert precision.served == "float32"
    assert "compute capability 8.9" in precision.reason
    assert "the device is cpu" in precision.reason
    assert runner.info.dtype == "float32"
    assert "fp8" not in runner.info.attention


def test_the_fp8_encoder_runs_the_calibration_set_on_cpu(bert_cross_encoder_dir: Path) -> None:
    import torch

    from kuberank_inference.quality import agreement
    from kuberank_inference.torchmodel.fp8 import Fp8Encoder

    runner = load_runner(bert_cross_encoder_dir)
    try:
        encoder = Fp8Encoder(runner._hf, compile_kernels=False)
    except (RuntimeError, NotImplementedError) as error:
        pytest.skip(f"this torch has no CPU FP8 matrix product: {error}")
    assert encoder.kernels.kind == "eager"
    with torch.inference_mode():
        reference = runner.gate_scores(runner._packed)
        candidate = runner.gate_scores(encoder)
    measured = agreement(reference, candidate)
    assert measured.queries == 24
    assert measured.pairs == 480
    # random weights of a 2-layer model: no threshold to meet, only real numbers
    assert -1.0 <= measured.mean_spearman <= 1.0


def _refused_info() -> ModelInfo:
    measured = Agreement(
        queries=24,
        pairs=480,
        k=10,
        mean_spearman=0.87,
        min_spearman=0.6,
        mean_top_k_overlap=0.83,
        min_top_k_overlap=0.6,
    )
    report = PrecisionReport(
        "fp8", "bfloat16", "refused_gate", "FP8 ranks unlike bfloat16", measured, GateThresholds()
    )
    return replace(fake_info(), dtype="bfloat16", precision=report)


@dataclass
class RefusedFp8(ServableFakeRunner):
    info: ModelInfo = field(default_factory=_refused_info)


async def test_info_and_metrics_say_why_fp8_was_refused(serve: Serve) -> None:
    client = await serve(RefusedFp8())
    info = await (await client.get("/info")).json()
    assert info["dtype"] == "bfloat16"
    assert info["precision"]["state"] == "refused_gate"
    assert info["precision"]["requested"] == "fp8"
    assert info["precision"]["agreement"]["mean_spearman"] == 0.87
    assert info["precision"]["thresholds"]["min_spearman"] == 0.98
    metrics = await (await client.get("/metrics")).text()
    assert (
        'kuberank_inference_precision{requested="fp8",served="bfloat16",state="refused_gate"} 1.0'
        in metrics
    )
    assert 'kuberank_inference_fp8_gate_agreement{measure="mean_spearman"} 0.87' in metrics


async def test_metrics_show_the_served_dtype_when_fp8_was_not_asked(serve: Serve) -> None:
    client = await serve(ServableFakeRunner())
    info = await (await client.get("/info")).json()
    assert "precision" not in info
    metrics = await (await client.get("/metrics")).text()
    assert (
        'kuberank_inference_precision{requested="float32",served="float32",'
        'state="not_requested"} 1.0' in metrics
    )
    assert 'kuberank_inference_fp8_gate_agreement{measure="' not in metrics
