"""Request validation: every mistake a client can make gets the right error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from kuberank_inference import payloads
from kuberank_inference.failures import (
    EmptyInputError,
    InvalidRequestError,
    MalformedRequestError,
    PayloadTooLargeError,
)

LIMITS = payloads.Limits(max_client_batch_size=3)


def test_tei_rerank_defaults() -> None:
    parsed = payloads.parse_tei_rerank({"query": "q", "texts": ["a", "b"]}, LIMITS)
    assert parsed == payloads.TeiRerank("q", ["a", "b"], False, "right", False, False)


def test_tei_rerank_options() -> None:
    body = {
        "query": "q",
        "texts": ["a"],
        "truncate": True,
        "truncation_direction": "Left",
        "raw_scores": True,
        "return_text": True,
        "unknown_field": 1,
    }
    parsed = payloads.parse_tei_rerank(body, LIMITS)
    assert (parsed.truncate, parsed.direction, parsed.raw_scores, parsed.return_text) == (
        True,
        "left",
        True,
        True,
    )


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ({"texts": ["a"]}, InvalidRequestError, "`query` is required"),
        (
            {"query": 3, "texts": ["a"]},
            InvalidRequestError,
            "`query` must be a string, got a number",
        ),
        ({"query": "q"}, InvalidRequestError, "`texts` is required"),
        ({"query": "q", "texts": "a"}, InvalidRequestError, "`texts` must be an array"),
        ({"query": "q", "texts": []}, EmptyInputError, "`texts` is empty"),
        ({"query": "q", "texts": ["a", 1]}, InvalidRequestError, r"`texts\[1\]` must be a string"),
        ({"query": "q", "texts": ["a"] * 4}, PayloadTooLargeError, "max-client-batch-size"),
        ({"query": "q", "texts": ["a"], "truncate": "yes"}, InvalidRequestError, "`truncate`"),
        (
            {"query": "q", "texts": ["a"], "truncation_direction": "Up"},
            InvalidRequestError,
            "truncation_direction",
        ),
    ],
)
def test_tei_rerank_errors(body: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        payloads.parse_tei_rerank(body, LIMITS)


def test_cohere_accepts_strings_and_text_objects() -> None:
    body = {"query": "q", "documents": ["a", {"text": "b"}], "top_n": 1, "model": "m"}
    v1 = payloads.parse_cohere_rerank(body, LIMITS, version="1")
    v2 = payloads.parse_cohere_rerank(body, LIMITS, version="2")
    assert v1.documents == ["a", "b"]
    assert v1.top_n == 1
    assert v1.return_documents  # v1 returns documents unless told not to
    assert not v2.return_documents


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": "q", "documents": [{"title": "x"}]}, r"`documents\[0\]` must be a string or"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, "`top_n` must be an integer >= 1"),
        ({"query": "q", "documents": ["a"], "top_n": 1.5}, "`top_n` must be an integer"),
        ({"query": "q", "documents": ["a"], "max_tokens_per_doc": True}, "max_tokens_per_doc"),
        ({"query": "q", "documents": ["a"], "model": 7}, "`model` must be a string"),
    ],
)
def test_cohere_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        payloads.parse_cohere_rerank(body, LIMITS, version="2")


def test_embed_requests() -> None:
    tei = payloads.parse_tei_embed({"inputs": "one", "normalize": False, "dimensions": 8}, LIMITS)
    assert (tei.inputs, tei.normalize, tei.dimensions) == (["one"], False, 8)
    openai = payloads.parse_openai_embed({"input": ["a", "b"], "encoding_format": "base64"}, LIMITS)
    assert (openai.inputs, openai.encoding_format) == (["a", "b"], "base64")


@pytest.mark.parametrize(
    ("parse", "body", "message"),
    [
        (payloads.parse_tei_embed, {}, "`inputs` is required"),
        (payloads.parse_tei_embed, {"inputs": [1, 2]}, "token ids is not supported"),
        (payloads.parse_tei_embed, {"inputs": "a", "prompt_name": "q"}, "prompt_name"),
        (payloads.parse_openai_embed, {"input": "a", "encoding_format": "hex"}, "encoding_format"),
        (payloads.parse_openai_embed, {"input": "a", "dimensions": 0}, "`dimensions`"),
    ],
)
def test_embed_errors(parse: Any, body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse(body, LIMITS)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "body is empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bodies_that_are_not_json_objects(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedRequestError, match=message):
        payloads.decode_json(raw)


def test_inject_oom_needs_a_count() -> None:
    assert payloads.parse_inject_oom({"count": 2}) == 2
    with pytest.raises(InvalidRequestError, match="`count` is required"):
        payloads.parse_inject_oom({})
