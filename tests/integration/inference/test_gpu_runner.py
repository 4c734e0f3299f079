"""The torch adapter on a real GPU: padding-free bf16 forward with variable-length flash attention
(and its kernel fusions) against the sentence-transformers reference, OOM mapping, memory facts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

QUERY = "what is the capital of france"
DOCS = [
    "paris is the capital and largest city of france",
    "bananas are long yellow fruit " * 9,
    "the stock market fell sharply today after the announcement",
    "a",
    "france borders spain, italy, germany and belgium " * 5,
]


def _runner(path: Path, **overrides: object) -> object:
    from kuberank_inference.sources import ModelSource
    from kuberank_inference.torchmodel.runner import RunnerSettings, TorchRunner

    settings = {
        "source": ModelSource(path, path.name),
        "task": "rerank",
        "device": "cuda",
        "dtype": "bfloat16",
        "attention": "packed",
        "max_input_length": 0,
        "model_id": None,
        "vram_safety_margin": 0.1,
        "fused_gelu": True,
        "fused_norm": True,
    }
    settings.update(overrides)
    return TorchRunner(RunnerSettings(**settings))  # type: ignore[arg-type]


def _reference(path: Path) -> list[float]:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(path), device="cuda", local_files_only=True)
    model.float()
    return [float(x) for x in model.predict([(QUERY, d) for d in DOCS])]


@pytest.mark.parametrize("family", ["bert", "xlmr"])
def test_packed_bf16_scores_match_fp32_reference(
    family: str, bert_cross_encoder_dir: Path, xlmr_cross_encoder_dir: Path
) -> None:
    from kuberank_inference.engine.contracts import PairsInput
    from kuberank_inference.rendering import activate

    path = bert_cross_encoder_dir if family == "bert" else xlmr_cross_encoder_dir
    runner = _runner(path)
    assert runner.info.padding_free  # type: ignore[attr-defined]
    assert "varlen" in runner.info.attention or "flash" in runner.info.attention  # type: ignore[attr-defined]
    sequences = runner.encode(PairsInput(QUERY, DOCS, truncate=True))  # type: ignore[attr-defined]
    raw = runner.finish_batch(runner.start_batch(sequences))  # type: ignore[attr-defined]
    scores = [activate(float(x), "sigmoid") for x in raw]
    reference = _reference(path)
    assert scores == pytest.approx(reference, abs=2e-2)


def test_injected_oom_surfaces_as_device_out_of_memory(bert_cross_encoder_dir: Path) -> None:
    from kuberank_inference.engine.contracts import PairsInput
    from kuberank_inference.failures import DeviceOutOfMemoryError
    from kuberank_inference.faults import OomInjection

    runner = OomInjection(_runner(bert_cross_encoder_dir))  # type: ignore[arg-type]
    sequences = runner.encode(PairsInput(QUERY, DOCS, truncate=True))
    runner.inject_oom(1)
    with pytest.raises(DeviceOutOfMemoryError):
        runner.start_batch(sequences)
    assert len(runner.finish_batch(runner.start_batch(sequences))) == len(DOCS)


def test_device_memory_facts(bert_cross_encoder_dir: Path) -> None:
    runner = _runner(bert_cross_encoder_dir)
    memory = runner.device_memory()  # type: ignore[attr-defined]
    assert memory is not None
    assert memory.total > memory.allocated > 0
    assert runner.activation_bytes_per_token(tokens=2048) > 0  # type: ignore[attr-defined]
    assert runner.device_uuids()[0].startswith(("GPU-", "MIG-"))  # type: ignore[attr-defined]
