"""The real tokenizer bounds what a request costs: a huge query is measured and cut once (the same
ids as truncating every pair), long texts are refused on a prefix window, and a request whose
client left stops between chunks."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from tokenizers import Encoding, Tokenizer

from kuberank_inference.engine.contracts import Direction, PairsInput, TextsInput
from kuberank_inference.failures import InputTooLongError, RequestAbandonedError
from kuberank_inference.torchmodel.tokenizing import SequenceTokenizer, as_arrays

MAX = 512
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def _text(words: int, seed: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * i) % len(WORDS)] + str(i % 13) for i in range(words))


@pytest.fixture(scope="module")
def backend(minilm_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def tokenizer(backend: Tokenizer) -> SequenceTokenizer:
    return SequenceTokenizer(backend, max_length=MAX, uses_type_ids=True)


@pytest.mark.parametrize("direction", ["right", "left"])
def test_a_huge_query_is_cut_once_with_the_ids_of_per_pair_truncation(
    tokenizer: SequenceTokenizer, backend: Tokenizer, direction: Direction
) -> None:
    query = _text(20_000, seed=1)
    docs = ["short", _text(40, 2), _text(300, 3), _text(900, 4), ""]
    reference = Tokenizer.from_str(backend.to_str())
    reference.no_padding()
    reference.enable_truncation(MAX, strategy="longest_first", direction=direction)
    expected = reference.encode_batch([(query, doc) for doc in docs])
    got = tokenizer.encode(PairsInput(query, docs, truncate=True, direction=direction))
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.ids.tolist() == theirs.ids
        assert mine.type_ids is not None
        assert mine.type_ids.tolist() == theirs.type_ids


def test_a_huge_query_with_1000_documents_costs_little(tokenizer: SequenceTokenizer) -> None:
    query = "word " * 380_000  # 1.9 MB
    docs = ["a"] * 1000
    started = time.process_time()
    with pytest.raises(InputTooLongError) as refused:
        tokenizer.encode(PairsInput(query, docs, truncate=False))
    assert refused.value.where == "query"
    cut = tokenizer.encode(PairsInput(query, docs, truncate=True))
    assert all(seq.num_tokens == MAX for seq in cut)
    assert time.process_time() - started < 1.0  # was over a second per refusal alone


def test_a_huge_text_is_refused_on_a_window(tokenizer: SequenceTokenizer) -> None:
    texts = ["a", "b", "word " * 380_000]
    started = time.process_time()
    with pytest.raises(InputTooLongError, match=r"texts\[2\] is at least \d+ tokens") as refused:
        tokenizer.encode(TextsInput(texts, truncate=False))
    assert refused.value.index == 2
    assert time.process_time() - started < 0.2


def test_exact_lengths_are_still_reported_below_the_window(tokenizer: SequenceTokenizer) -> None:
    with pytest.raises(InputTooLongError, match=r"texts\[0\] is 602 tokens long"):
        tokenizer.encode(TextsInput(["word " * 600], truncate=False))


def test_tokenization_stops_once_the_client_left(tokenizer: SequenceTokenizer) -> None:
    left = threading.Event()
    left.set()
    with pytest.raises(RequestAbandonedError):
        tokenizer.encode(PairsInput("q", ["doc"] * 500, truncate=True), abandoned=left)
    assert len(tokenizer.encode(PairsInput("q", ["doc"] * 500, truncate=True))) == 500


@pytest.mark.parametrize("direction", ["right", "left"])
@pytest.mark.parametrize("truncate", [True, False])
def test_pairs_and_texts_get_the_ids_of_the_tokenizers_own_call(
    tokenizer: SequenceTokenizer, backend: Tokenizer, direction: Direction, truncate: bool
) -> None:
    query = _text(30, seed=5)
    long_query = _text(120, seed=6)  # under the limit, longer than some documents
    docs = ["short", "", _text(40, 2), _text(200, 3), _text(480, 4), _text(900, 7), "é ü ß"]
    if not truncate:
        docs = [doc for doc in docs if len(doc.split()) < 200]
    reference = Tokenizer.from_str(backend.to_str())
    reference.no_padding()
    if truncate:
        reference.enable_truncation(MAX, strategy="longest_first", direction=direction)
    else:
        reference.no_truncation()
    for q in (query, long_query) if truncate else (query,):
        expected = reference.encode_batch([(q, doc) for doc in docs])
        got = tokenizer.encode(PairsInput(q, docs, truncate=truncate, direction=direction))
        for mine, theirs in zip(got, expected, strict=True):
            assert mine.ids.tolist() == theirs.ids
            assert mine.type_ids is not None
            assert mine.type_ids.tolist() == theirs.type_ids
    expected = reference.encode_batch(docs)
    got = tokenizer.encode(TextsInput(docs, truncate=truncate, direction=direction))
    assert [mine.ids.tolist() for mine in got] == [theirs.ids for theirs in expected]


class _Shaped:
    """What as_arrays reads of an Encoding."""

    def __init__(self, ids: list[int], type_ids: list[int]) -> None:
        self.ids = ids
        self.type_ids = type_ids

    def __len__(self) -> int:
        return len(self.ids)


@pytest.mark.parametrize(
    "type_ids",
    [
        [[0, 0, 1, 1], [0, 0, 0], [0, 1, 1, 1, 1], []],  # zeros then ones (and empty)
        [[0, 1, 0, 1], [0, 0, 0], [2, 2, 2, 2, 2], []],  # other shapes: every list converted
        [[1, 1, 0, 0], [1, 1, 1], [0, 0, 0, 0, 1], []],
    ],
)
def test_arrays_keep_every_id_and_type_id(type_ids: list[list[int]]) -> None:
    ids = [[101, 7, 8, 102], [101, 9, 102], [5, 6, 7, 8, 9], []]
    encodings = [_Shaped(i, t) for i, t in zip(ids, type_ids, strict=True)]
    got = as_arrays(cast(list[Encoding], encodings), with_types=True)
    assert [seq.ids.tolist() for seq in got] == ids
    assert [seq.type_ids.tolist() for seq in got if seq.type_ids is not None] == type_ids
    assert all(seq.ids.dtype == np.int32 for seq in got)
    assert all(seq.type_ids is not None and seq.type_ids.dtype == np.int32 for seq in got)
    untyped = as_arrays(cast(list[Encoding], encodings), with_types=False)
    assert [seq.ids.tolist() for seq in untyped] == ids
    assert all(seq.type_ids is None for seq in untyped)
