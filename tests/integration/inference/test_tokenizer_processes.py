"""Tokenizer processes (the server's default): the same sequences as the runner's own tokenizer,
its errors intact across the process boundary, a leaving client seen by the worker, a dead
worker replaced, and the server over HTTP giving the same scores either way."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from kuberank_inference.engine.contracts import ModelInput, PairsInput, TextsInput
from kuberank_inference.failures import (
    InferenceFailedError,
    InputTooLongError,
    RequestAbandonedError,
)
from kuberank_inference.torchmodel.tokenizerpool import ProcessTokenizers
from kuberank_inference.torchmodel.tokenizing import Encoded, pack, unpack
from tests.integration.inference.conftest import Serve


@pytest.fixture(scope="module")
def pool(cross_runner: Any) -> Iterator[ProcessTokenizers]:
    tokenizers = ProcessTokenizers(cross_runner.tokenizer_spec(), workers=2, threads_per_worker=1)
    yield tokenizers
    tokenizers.shutdown()


MANY = [f"document number {i} " + "about pods " * (i % 7) for i in range(40)]

REQUESTS: list[ModelInput] = [
    PairsInput("split over the workers", MANY, truncate=False),
    TextsInput(MANY, truncate=True, max_text_tokens=5),
    PairsInput("what is a pod", ["a pod is a group of containers", "", "x " * 40], truncate=False),
    PairsInput("long query " * 200, ["doc one", "doc " * 300], truncate=True),
    PairsInput("q", ["left cut " * 300], truncate=True, direction="left"),
    PairsInput("q", ["one two three four five six"], truncate=False, max_text_tokens=3),
    TextsInput(["embed me", "ünïcödé text 🙂", "word " * 600], truncate=True),
]


@pytest.mark.parametrize("request_index", range(len(REQUESTS)))
def test_the_same_sequences_as_the_runner(
    pool: ProcessTokenizers, cross_runner: Any, request_index: int
) -> None:
    request = REQUESTS[request_index]
    got = cast(list[Encoded], pool.submit(request).future.result(timeout=60))
    expected = cross_runner.encode(request)
    assert len(got) == len(expected) == request.size
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.num_tokens == theirs.num_tokens
        assert np.array_equal(mine.ids, theirs.ids)
        assert (mine.type_ids is None) == (theirs.type_ids is None)
        if theirs.type_ids is not None and mine.type_ids is not None:
            assert np.array_equal(mine.type_ids, theirs.type_ids)


def test_a_too_long_text_is_refused_with_its_index_and_limit(pool: ProcessTokenizers) -> None:
    request = PairsInput("q", ["fine", "word " * 2000], truncate=False)
    with pytest.raises(InputTooLongError) as raised:
        pool.submit(request).future.result(timeout=60)
    assert raised.value.index == 1
    assert raised.value.where == "texts[1]"
    assert raised.value.limit == 512
    assert raised.value.at_least
    assert "truncate" in raised.value.message


def test_a_split_request_reports_its_earliest_too_long_text(pool: ProcessTokenizers) -> None:
    texts = ["short"] * 40
    texts[13] = texts[31] = "word " * 2000
    ticket = pool.submit(PairsInput("q", texts, truncate=False))
    assert len(ticket.parts) == 2  # both workers idle: one slice each
    with pytest.raises(InputTooLongError) as raised:
        ticket.future.result(timeout=60)
    assert (raised.value.index, raised.value.where) == (13, "texts[13]")
    ticket = pool.submit(PairsInput("q", texts[20:], truncate=False))
    with pytest.raises(InputTooLongError) as raised:
        ticket.future.result(timeout=60)
    assert (raised.value.index, raised.value.where) == (11, "texts[11]")


def test_the_worker_stops_once_the_client_left(pool: ProcessTokenizers) -> None:
    # thousands of chunks' worth: the worker checks the slot between chunks and gives up
    request = PairsInput("q", ["some words to tokenize " * 20] * 20_000, truncate=True)
    ticket = pool.submit(request)
    for part in ticket.parts:  # what ticket.abandon() does, but the parts' futures still report
        pool.abandon(part.slot)
    for part in ticket.parts:
        with pytest.raises(RequestAbandonedError):
            part.inner.result(timeout=120)
    with pytest.raises(RequestAbandonedError):  # and the request's own future says so
        ticket.future.result(timeout=60)
    # the slot is free again and cleared: the next request runs to the end
    assert len(pool.submit(REQUESTS[2]).future.result(timeout=60)) == 3


def test_every_worker_runs_before_the_first_request(cross_runner: Any) -> None:
    # the pool spawns on demand; start-up must not leave workers for requests to spawn
    tokenizers = ProcessTokenizers(cross_runner.tokenizer_spec(), workers=4, threads_per_worker=1)
    try:
        started = sorted(tokenizers.worker_pids())
        assert len(started) == 4
        tickets = [tokenizers.submit(REQUESTS[0]) for _ in range(8)]
        assert all(len(t.future.result(timeout=60)) == 40 for t in tickets)
        assert sorted(tokenizers.worker_pids()) == started
    finally:
        tokenizers.shutdown()


def test_a_killed_worker_is_replaced(cross_runner: Any) -> None:
    tokenizers = ProcessTokenizers(cross_runner.tokenizer_spec(), workers=1, threads_per_worker=1)
    try:
        (pid,) = tokenizers.worker_pids()
        os.kill(pid, signal.SIGKILL)
        outcomes: list[str] = []
        for _ in range(3):  # the death is noticed at the next submit, or fails the one in flight
            try:
                outcomes.append(str(len(tokenizers.submit(REQUESTS[2]).future.result(timeout=60))))
            except InferenceFailedError as error:
                outcomes.append(error.message)
        assert outcomes[-1] == "3", outcomes
        assert all(o == "3" or "tokenizer process died" in o for o in outcomes), outcomes
        assert pid not in tokenizers.worker_pids()
    finally:
        tokenizers.shutdown()


def test_packed_sequences_unpack_to_views(pool: ProcessTokenizers) -> None:
    sequences = cast(list[Encoded], pool.submit(REQUESTS[0]).future.result(timeout=60))
    assert len(sequences) == 40
    again = unpack(pack(sequences))
    assert [s.num_tokens for s in again] == [s.num_tokens for s in sequences]
    assert unpack(pack([])) == []


async def test_the_server_scores_the_same_with_tokenizer_processes(
    serve: Serve, cross_runner: Any, tmp_path: Path
) -> None:
    body = {"query": "what is a pod", "texts": ["a pod is a group", "nothing", "x " * 30]}
    scores = []
    for mode in ("off", "on"):
        client = await serve(
            cross_runner, "--tokenizer-processes", mode, "--tokenization-workers", "2"
        )
        info = await (await client.get("/info")).json()
        response = await client.post("/rerank", json=body)
        assert response.status == 200, await response.text()
        scores.append(sorted((item["index"], item["score"]) for item in await response.json()))
        too_long = await client.post("/rerank", json={"query": "q", "texts": ["w " * 2000]})
        assert too_long.status == 422, await too_long.text()
        assert "texts[0]" in (await too_long.json())["error"]
        assert info["tokenizer_processes"] == mode
        await client.close()
    assert [index for index, _ in scores[0]] == [index for index, _ in scores[1]]
    assert [score for _, score in scores[0]] == pytest.approx([score for _, score in scores[1]])
