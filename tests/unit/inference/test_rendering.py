"""Response shapes and score arithmetic."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from kuberank_inference import rendering
from kuberank_inference.failures import InvalidRequestError


def test_sigmoid_activation_is_stable_at_extremes() -> None:
    assert rendering.activate(0.0, "sigmoid") == 0.5
    assert rendering.activate(800.0, "sigmoid") == 1.0
    assert rendering.activate(-800.0, "sigmoid") == pytest.approx(0.0)
    assert rendering.activate(2.5, "identity") == 2.5


def test_tei_rerank_sorted_by_score_with_optional_text() -> None:
    out = rendering.render_tei_rerank([0.1, 0.9, 0.5], ["a", "b", "c"], return_text=True)
    assert out == [
        {"index": 1, "score": 0.9, "text": "b"},
        {"index": 2, "score": 0.5, "text": "c"},
        {"index": 0, "score": 0.1, "text": "a"},
    ]
    assert "text" not in rendering.render_tei_rerank([1.0], ["a"], return_text=False)[0]


def test_cohere_rerank_top_n_and_documents() -> None:
    out = rendering.render_cohere_rerank(
        [0.1, 0.9, 0.5],
        ["a", "b", "c"],
        top_n=2,
        return_documents=True,
        version="2",
        request_id="r1",
    )
    assert out == {
        "id": "r1",
        "results": [
            {"index": 1, "relevance_score": 0.9, "document": {"text": "b"}},
            {"index": 2, "relevance_score": 0.5, "document": {"text": "c"}},
        ],
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
    }


def test_cosine_and_normalization() -> None:
    assert rendering.normalized([3.0, 4.0]) == [0.6, 0.8]
    assert rendering.normalized([0.0, 0.0]) == [0.0, 0.0]
    scores = rendering.cosine_scores([1.0, 0.0], [[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])
    assert scores == pytest.approx([1.0, 0.0, -1.0])


def test_dimensions_truncate_or_fail_with_the_limit() -> None:
    assert rendering.truncate_dimensions([1.0, 2.0, 3.0], 2, field="dimensions") == [1.0, 2.0]
    with pytest.raises(InvalidRequestError, match="at most 3"):
        rendering.truncate_dimensions([1.0, 2.0, 3.0], 4, field="dimensions")


def test_openai_embeddings_float_and_base64() -> None:
    out = rendering.render_openai_embeddings(
        [[1.0, -2.0]], model="m", prompt_tokens=7, encoding_format="base64"
    )
    encoded = out["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (1.0, -2.0)
    assert out["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    plain = rendering.render_openai_embeddings(
        [[0.5]], model="m", prompt_tokens=1, encoding_format="float"
    )
    assert plain["data"] == [{"object": "embedding", "index": 0, "embedding": [0.5]}]
    assert plain["object"] == "list"


def test_ranked_is_stable_for_ties() -> None:
    assert rendering.ranked([0.5, 0.5, 1.0]) == [2, 0, 1]
    assert not math.isnan(rendering.activate(-1.0, "sigmoid"))
