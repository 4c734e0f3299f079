"""The torch adapter on CPU: the padding-free forward and the padded one both equal a direct
sentence-transformers call, for BERT- and XLM-R-shaped cross-encoders."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuberank_inference.engine.contracts import PairsInput
from kuberank_inference.rendering import activate
from tests.integration.inference.conftest import load_runner

QUERY = "what is the capital of france"
DOCS = ["paris is the capital of france", "bananas " * 60, "a", "markets fell on tuesday"]


@pytest.mark.parametrize("family", ["bert", "xlmr"])
@pytest.mark.parametrize("attention", ["packed", "padded"])
def test_runner_scores_equal_cross_encoder_predict(
    family: str,
    attention: str,
    bert_cross_encoder_dir: Path,
    xlmr_cross_encoder_dir: Path,
) -> None:
    from sentence_transformers import CrossEncoder

    path = bert_cross_encoder_dir if family == "bert" else xlmr_cross_encoder_dir
    runner = load_runner(path, attention=attention)
    assert runner.info.padding_free == (attention == "packed")
    raw = runner.finish_batch(runner.start_batch(runner.encode(PairsInput(QUERY, DOCS, False))))
    direct = CrossEncoder(str(path), device="cpu").predict([(QUERY, d) for d in DOCS])
    assert [activate(x, "sigmoid") for x in raw] == pytest.approx(direct.tolist(), abs=1e-6)
