"""Scores and embeddings from the engine's raw outputs, whatever the model's task: a cross-encoder
scores pairs; an embedding model reranks by cosine similarity (numpy, off the event loop). No
HTTP, no torch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kuberank_inference.engine.batching import Completed
from kuberank_inference.engine.contracts import (
    Direction,
    ModelInfo,
    ModelInput,
    PairsInput,
    TextsInput,
)
from kuberank_inference.failures import InputTooLongError, WrongTaskError
from kuberank_inference.rendering import activate, cosine_scores, normalized_rows


class Runs(Protocol):
    async def run(self, request: ModelInput) -> Completed: ...


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    num_tokens: int


class Ranker:
    def __init__(self, *, engine: Runs, info: ModelInfo) -> None:
        self._engine = engine
        self._info = info

    async def rerank(
        self,
        *,
        query: str,
        texts: Sequence[str],
        truncate: bool,
        direction: Direction = "right",
        max_text_tokens: int | None = None,
        raw_scores: bool = False,
        field: str = "texts",
    ) -> list[float]:
        if self._info.task == "rerank":
            pairs = PairsInput(query, texts, truncate, direction, max_text_tokens)
            try:
                done = await self._engine.run(pairs)
            except InputTooLongError as error:
                raise error.renamed(f"{field}[{error.index}]") from None
            raw = [_as_score(out) for out in done.outputs]
            if raw_scores:
                return raw
            return [activate(score, self._info.score_activation) for score in raw]
        # an embedding model: the query is embedded with the texts, in the same batches
        texts_input = TextsInput([query, *texts], truncate, direction, max_text_tokens)
        try:
            done = await self._engine.run(texts_input)
        except InputTooLongError as error:
            where = "query" if error.index == 0 else f"{field}[{error.index - 1}]"
            raise error.renamed(where) from None
        vectors = [_as_vector(out) for out in done.outputs]
        # the vector math runs in numpy on a worker thread, never on the event loop
        return await asyncio.to_thread(cosine_scores, vectors[0], vectors[1:])

    async def embed(
        self,
        *,
        texts: Sequence[str],
        truncate: bool,
        direction: Direction = "right",
        normalize: bool | None = None,
        field: str = "inputs",
    ) -> Embeddings:
        if self._info.task != "embed":
            raise WrongTaskError(
                f"this server runs the reranker {self._info.model_id} (task rerank); embeddings "
                "need an embedding model: start a server with --task embed and such a model"
            )
        try:
            done = await self._engine.run(TextsInput(texts, truncate, direction))
        except InputTooLongError as error:
            raise error.renamed(f"{field}[{error.index}]") from None
        vectors = [_as_vector(out) for out in done.outputs]
        if normalize is None:
            normalize = self._info.normalizes_embeddings
        if normalize:
            vectors = await asyncio.to_thread(normalized_rows, vectors)
        return Embeddings(vectors, done.num_tokens)


def _as_score(output: float | list[float]) -> float:
    if isinstance(output, list):
        raise TypeError("a reranker returned a vector where a score was expected")
    return float(output)


def _as_vector(output: float | list[float]) -> list[float]:
    if not isinstance(output, list):
        raise TypeError("an embedding model returned a score where a vector was expected")
    return output
