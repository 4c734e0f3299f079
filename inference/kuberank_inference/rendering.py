"""Results into the JSON shapes of TEI, Cohere and OpenAI, and the score arithmetic they need.
Pure functions."""

from __future__ import annotations

import base64
import math
import struct
import uuid
from collections.abc import Sequence
from typing import Any, Literal, cast

import numpy as np

from kuberank_inference.engine.contracts import ScoreActivation
from kuberank_inference.failures import InvalidRequestError


def activate(raw: float, activation: ScoreActivation) -> float:
    """The model's score activation (a single-logit cross-encoder's sigmoid)."""
    if activation == "identity":
        return raw
    if raw >= 0:
        return 1.0 / (1.0 + math.exp(-raw))
    z = math.exp(raw)
    return z / (1.0 + z)


def _unit_rows(vectors: Sequence[Sequence[float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    rows = np.array(vectors, dtype=np.float64, ndmin=2)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    # a zero vector stays as it is
    unit: np.ndarray[Any, np.dtype[np.float64]] = np.divide(
        rows, norms, out=rows.copy(), where=norms != 0.0
    )
    return unit


def normalized_rows(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """Each vector scaled to unit length, in one numpy pass (the server calls it off the loop)."""
    if not vectors:
        return []
    return cast(list[list[float]], _unit_rows(vectors).tolist())


def normalized(vector: Sequence[float]) -> list[float]:
    return normalized_rows([vector])[0]


def cosine_scores(query: Sequence[float], documents: Sequence[Sequence[float]]) -> list[float]:
    if not documents:
        return []
    unit = _unit_rows([query, *documents])
    return cast(list[float], (unit[1:] @ unit[0]).tolist())


def truncate_dimensions(vector: list[float], dimensions: int | None, *, field: str) -> list[float]:
    """Matryoshka-style truncation to the first `dimensions` values."""
    if dimensions is None:
        return vector
    check_dimensions(dimensions, len(vector), field=field)
    return vector[:dimensions]


def check_dimensions(dimensions: int | None, size: int | None, *, field: str) -> None:
    """Refuse more dimensions than the model's embeddings have (before any work is done)."""
    if dimensions is not None and size is not None and dimensions > size:
        raise InvalidRequestError(
            f"`{field}` is {dimensions} but the model's embeddings have {size} "
            f"dimensions; ask for at most {size}"
        )


def ranked(scores: Sequence[float]) -> list[int]:
    """Indexes by descending score (stable for ties)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def render_tei_rerank(
    scores: Sequence[float], texts: Sequence[str], *, return_text: bool
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for index in ranked(scores):
        entry: dict[str, Any] = {"index": index, "score": scores[index]}
        if return_text:
            entry["text"] = texts[index]
        results.append(entry)
    return results


def render_cohere_rerank(
    scores: Sequence[float],
    documents: Sequence[str],
    *,
    top_n: int | None,
    return_documents: bool,
    version: Literal["1", "2"],
    request_id: str | None = None,
) -> dict[str, Any]:
    order = ranked(scores)
    if top_n is not None:
        order = order[:top_n]
    results: list[dict[str, Any]] = []
    for index in order:
        entry: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if return_documents:
            entry["document"] = {"text": documents[index]}
        results.append(entry)
    return {
        "id": request_id or str(uuid.uuid4()),
        "results": results,
        "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}},
    }


def encode_base64(vector: Sequence[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32 values."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def render_openai_embeddings(
    vectors: Sequence[list[float]],
    *,
    model: str,
    prompt_tokens: int,
    encoding_format: Literal["float", "base64"],
) -> dict[str, Any]:
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": encode_base64(vector) if encoding_format == "base64" else vector,
        }
        for index, vector in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def error_body(message: str, error_type: str) -> dict[str, str]:
    return {"error": message, "error_type": error_type}
